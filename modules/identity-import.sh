# Imports the VM's identity into /var/identity and prepares the sources of /etc/resolv.conf and
# /etc/hosts. Runs in the initrd (ivm-identity.service, modules/identity.nix), before the bind mounts
# onto /sysroot/etc and before switch-root, so PID 1 starts with the VM's machine-id.
#
#   identity-import SOURCE IDENTITY_DIR RUNTIME_DIR BASE_HOSTS DEFAULT_RESOLV_CONF [DEVICE]
#
# SOURCE is the mounted identity disk (empty when there is none); it is unmounted on every exit, so
# the private host key does not stay mounted whatever happens. DEVICE is the disk's block device:
# when it exists but SOURCE is not mounted (a disk that did not mount), the disk counts as refused,
# not absent, so a corrupt disk cannot keep keys that the host meant to revoke. The files are checked with the rules
# of tests/cases/identity.json (the host tool's are python/ivm/identity/rules.py; where this script
# is more lenient, the rule says so), then only the known names are copied, root-owned with fixed
# modes, into a new directory that replaces IDENTITY_DIR in one rename (RENAME_EXCHANGE).
# A missing disk keeps the previous identity: the VM still boots. A disk that is present but refused
# keeps the previous machine-id, hostname and host key but removes its authorized keys and firewall
# ports (fail closed: keys and ports the refused identity may have revoked stop working), and says so
# on the console.
# RUNTIME_DIR gets resolv.conf (the identity's, else DEFAULT_RESOLV_CONF), hosts (BASE_HOSTS plus the
# identity's extra lines) and identity-status (one line: imported, absent, refused: WHY, failed: WHY),
# on every path; identity-accepted only when the identity was imported or absent, so units that must
# not run on a refused identity (the guest agent, the host's health signal) can require it.
set -uo pipefail
export LC_ALL=C

readonly max_bytes=65536
readonly required=(machine-id hostname ssh_host_ed25519_key ssh_host_ed25519_key.pub)
readonly optional=(ssh_host_ed25519_key-cert.pub resolv.conf hosts tcp_ports udp_ports admin_authorized_keys user_authorized_keys)

log() { echo "ivm-identity: $*" >&2; }

# Rules return 1 and leave the reason in `problem`.
problem=""
fail() {
  problem="$*"
  return 1
}

# Reads a file into `text` after the checks every identity file gets.
text=""
read_text() {
  local file=$1 size
  if [[ -L $file || ! -f $file ]]; then
    fail "is not a regular file"
    return
  fi
  size=$(stat -c %s -- "$file") || {
    fail "cannot be read"
    return
  }
  if ((size > max_bytes)); then
    fail "is $size bytes; identity files are limited to $max_bytes"
    return
  fi
  # Bash variables cannot hold NUL bytes: count them before reading.
  if (($(tr -d '\000' <"$file" | wc -c) != size)); then
    fail "holds a NUL byte"
    return
  fi
  text=$(<"$file") || {
    fail "cannot be read"
    return
  }
  # Leniency: ASCII control characters only; UTF-8 validity and Unicode non-printables are the host's.
  if [[ $text == *[$'\001'-$'\010'$'\013'-$'\037'$'\177']* ]]; then
    fail "holds a control character (or CR line endings)"
    return
  fi
}

key="" key_type="" groups=0

# Lines that are neither blank nor comments, trimmed, into the array `lines`.
content_lines() {
  local comments=${2:-#} line
  lines=()
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -z $line || $comments == *"${line:0:1}"* ]] && continue
    lines+=("$line")
  done <<<"$1"
}

# One dotted quad, each part 0-255 without leading zeros (Python's ipaddress refuses those too).
is_ipv4() {
  local octet
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  for octet in "${BASH_REMATCH[@]:1}"; do
    [[ $octet == 0 || $octet != 0* ]] && ((10#$octet <= 255)) || return 1
  done
}

# Groups of 1-4 hex digits between single colons, into `groups` (a count); fails on an empty group.
count_groups() {
  local part=$1 group parts=()
  groups=0
  [[ -z $part ]] && return 0
  [[ $part != :* && $part != *: ]] || return 1
  IFS=: read -r -a parts <<<"$part"
  for group in "${parts[@]}"; do
    [[ $group =~ ^[0-9A-Fa-f]{1,4}$ ]] || return 1
    groups=$((groups + 1))
  done
}

# RFC 4291 text form: eight groups, or fewer around one "::", the last two may be a dotted quad.
is_ipv6() {
  local a=$1 head tail n
  [[ $a == *:* && $a =~ ^[0-9A-Fa-f:.]+$ ]] || return 1
  if [[ $a == *.* ]]; then
    is_ipv4 "${a##*:}" || return 1
    a="${a%:*}:0:0"
  fi
  [[ $a != *::*::* ]] || return 1
  if [[ $a == *::* ]]; then
    head=${a%%::*} tail=${a#*::}
    count_groups "$head" || return 1
    n=$groups
    count_groups "$tail" || return 1
    ((n + groups <= 7))
  else
    count_groups "$a" && ((groups == 8))
  fi
}

# An address as python/ivm/identity/rules.py takes it: IPv4, or IPv6 with an optional %zone.
is_ip() {
  local a=$1
  if [[ $a == *%* ]]; then
    [[ ${a#*%} =~ ^[A-Za-z0-9_.-]+$ ]] && is_ipv6 "${a%%\%*}"
    return
  fi
  is_ipv4 "$a" || is_ipv6 "$a"
}

readonly dns_name='^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$'
# python/ivm/identity/sshkey.py PUBLIC_KEY_TYPES.
readonly key_types=" ssh-ed25519 ssh-rsa ecdsa-sha2-nistp256 ecdsa-sha2-nistp384 ecdsa-sha2-nistp521 sk-ssh-ed25519@openssh.com sk-ecdsa-sha2-nistp256@openssh.com "

# The `TYPE BASE64 [COMMENT]` part of an authorized_keys line into `key`, skipping its options.
# Options may hold quoted blanks: the key starts after the first unquoted one (one regex, not a
# loop over characters, which would take minutes on a 64 KiB line).
readonly key_options='^([^[:space:]"]|"[^"]*")+[[:space:]]+(.*)$'
key_part() {
  local line=$1 first
  first=${line%%[[:space:]]*}
  if [[ $key_types == *" $first "* || $first == ssh-* || $first == ecdsa-* || $first == sk-* ]]; then
    key=$line
  elif [[ $line =~ $key_options ]]; then
    key=${BASH_REMATCH[2]}
  else
    fail "has options but no key"
  fi
}

# `TYPE BASE64 [COMMENT]`: a known type, and base64 whose first field names that same type.
check_key() {
  local fields=() type
  read -r -a fields <<<"$1"
  ((${#fields[@]} >= 2)) || fail "is not a public key line (expected: TYPE BASE64 [COMMENT])" || return
  type=${fields[0]}
  [[ $key_types == *" $type "* ]] || fail "has an unsupported key type '${type:0:40}'" || return
  check_blob "$type" "${fields[1]}" || return
  key_type=$type
}

# BASE64 is valid base64 whose first field (an SSH string) is TYPE.
check_blob() {
  local type=$1 encoded=$2 expected header
  [[ $encoded =~ ^[A-Za-z0-9+/]+={0,2}$ ]] && ((${#encoded} % 4 == 0)) ||
    fail "has a key that is not valid base64" || return
  expected=$(printf '%08x' "${#type}")$(printf '%s' "$type" | od -An -v -tx1 | tr -d ' \n')
  header=$(printf '%s' "$encoded" | base64 -d 2>/dev/null | head -c $((4 + ${#type})) | od -An -v -tx1 | tr -d ' \n')
  [[ $header == "$expected" ]] || fail "has a key that does not hold a ${type} key"
}

check_machine_id() {
  [[ $1 =~ ^[0-9a-f]{32}$ && $(stat -c %s -- "$2") -le 33 ]] ||
    fail "must be 32 lowercase hexadecimal characters and a newline (machine-id(5))" || return
  [[ $1 != 00000000000000000000000000000000 ]] || fail "must not be all zeros"
}

check_hostname() {
  # $(<file) drops every trailing newline; the host allows one.
  [[ $1 =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ && $(stat -c %s -- "$2") -le $((${#1} + 1)) ]] ||
    fail "must be one hostname label (a-z, 0-9, '-', at most 63)"
}

# Leniency: the armour only. The host parsed the key and matched it with its .pub before writing
# the disk; a bash parser of the OpenSSH format would add risk, not safety (sshd refuses a bad key).
check_private_key() {
  [[ $1 == "-----BEGIN OPENSSH PRIVATE KEY-----"$'\n'*$'\n'"-----END OPENSSH PRIVATE KEY-----" ]] ||
    fail "is not an OpenSSH private key"
}

check_public_key() {
  content_lines "$1"
  ((${#lines[@]} == 1)) || fail "must hold exactly one public key line" || return
  check_key "${lines[0]}" || return
  [[ $key_type == ssh-ed25519 ]] || fail "must be an ssh-ed25519 public key"
}

# Leniency: the line's type and armour only. The host parsed the certificate (a host certificate for
# this host key) before writing the disk; sshd skips a certificate it cannot use and still starts.
check_certificate() {
  local fields=()
  content_lines "$1"
  ((${#lines[@]} == 1)) || fail "must hold exactly one certificate line" || return
  read -r -a fields <<<"${lines[0]}"
  ((${#fields[@]} >= 2)) && [[ ${fields[0]} == ssh-ed25519-cert-v01@openssh.com ]] ||
    fail "must be an ssh-ed25519-cert-v01@openssh.com certificate" || return
  check_blob "${fields[0]}" "${fields[1]}"
}

check_ports() {
  local line n=0
  content_lines "$1"
  for line in "${lines[@]}"; do
    n=$((n + 1))
    [[ $line =~ ^[0-9]{1,5}$ ]] && ((10#$line >= 1 && 10#$line <= 65535)) ||
      fail "line '$line' is not a port number from 1 to 65535" || return
  done
}

check_hosts() {
  local line name fields
  content_lines "$1"
  for line in "${lines[@]}"; do
    read -r -a fields <<<"${line%%#*}"
    ((${#fields[@]} > 0)) || continue
    is_ip "${fields[0]}" || fail "'${fields[0]}' is not an IP address" || return
    ((${#fields[@]} >= 2)) || fail "an address needs at least one host name" || return
    for name in "${fields[@]:1}"; do
      [[ $name =~ $dns_name && ${#name} -le 253 ]] || fail "'$name' is not a valid host name" || return
    done
  done
}

check_resolv_conf() {
  local line fields name
  content_lines "$1" "#;"
  for line in "${lines[@]}"; do
    read -r -a fields <<<"$line"
    case ${fields[0]} in
    nameserver)
      ((${#fields[@]} == 2)) || fail "nameserver takes exactly one address" || return
      is_ip "${fields[1]}" || fail "'${fields[1]}' is not an IP address" || return
      ;;
    search | domain)
      ((${#fields[@]} >= 2)) || fail "${fields[0]} needs at least one domain" || return
      for name in "${fields[@]:1}"; do
        [[ $name =~ $dns_name ]] || fail "'$name' is not a valid domain" || return
      done
      ;;
    options | sortlist) ;;
    *) fail "unknown keyword '${fields[0]}'" || return ;;
    esac
  done
}

check_authorized_keys() {
  local line
  content_lines "$1"
  for line in "${lines[@]}"; do
    if ! key_part "$line" || ! check_key "$key"; then
      fail "line '${line:0:40}' $problem"
      return
    fi
  done
}

# The rule and the mode of each known name.
rule_of() {
  case $1 in
  machine-id) echo check_machine_id ;;
  hostname) echo check_hostname ;;
  ssh_host_ed25519_key) echo check_private_key ;;
  ssh_host_ed25519_key.pub) echo check_public_key ;;
  ssh_host_ed25519_key-cert.pub) echo check_certificate ;;
  resolv.conf) echo check_resolv_conf ;;
  hosts) echo check_hosts ;;
  tcp_ports | udp_ports) echo check_ports ;;
  admin_authorized_keys | user_authorized_keys) echo check_authorized_keys ;;
  esac
}

mode_of() {
  if [[ $1 == ssh_host_ed25519_key ]]; then echo 0600; else echo 0644; fi
}

# Checks every known file on the disk into `found`, or fails naming the first problem.
found=()
validate() {
  local source=$1 name text
  found=()
  for name in "${required[@]}"; do
    [[ -e $source/$name || -L $source/$name ]] || fail "$name is missing" || return
  done
  for name in "${required[@]}" "${optional[@]}"; do
    [[ -e $source/$name || -L $source/$name ]] || continue
    text=""
    if ! read_text "$source/$name" || ! "$(rule_of "$name")" "$text" "$source/$name"; then
      problem="$name $problem"
      return 1
    fi
    found+=("$name")
  done
}

# What happened to the identity this boot, for RUNTIME_DIR/identity-status.
status="failed: the import did not finish"

# Removes the authorized keys and ports of the kept identity: a refused disk may be the one that
# revoked them.
revoke_access() {
  local target=$1 name
  for name in admin_authorized_keys user_authorized_keys tcp_ports udp_ports; do
    if [[ -e $target/$name || -L $target/$name ]]; then
      rm -f -- "$target/$name" || return 1
    fi
  done
  if [[ -d $target ]]; then
    sync -f -- "$target" || return 1
  fi
}

# A mount point sits on another device than its parent (mountpoint(1) is not in the initrd).
is_mounted() {
  [[ -d $1 && $(stat -c %d -- "$1") != $(stat -c %d -- "$1/..") ]]
}

import_identity() {
  local source=$1 target=$2 device=$3 name staging
  if [[ -n $device && -b $device ]] && ! is_mounted "$source"; then
    status="refused: the identity disk ${device} is attached but could not be mounted"
    log "identity disk REFUSED: ${device} could not be mounted; keeping ${target} without its authorized keys and ports"
    revoke_access "$target" || return 1
    return 0
  fi
  if [[ -n $device && -b $device ]] && [[ -z $(ls -A -- "$source" 2>/dev/null) ]]; then
    status="refused: the identity disk ${device} is empty"
    log "identity disk REFUSED: ${device} is empty; keeping ${target} without its authorized keys and ports"
    revoke_access "$target" || return 1
    return 0
  fi
  if [[ ! -d $source ]] || [[ -z $(ls -A -- "$source" 2>/dev/null) ]]; then
    log "no identity disk (or it is empty); keeping ${target}"
    status="absent"
    return 0
  fi
  if ! validate "$source"; then
    status="refused: $problem"
    # On the console too (the unit sends stderr there): the host sees the refusal in the serial log.
    log "identity disk REFUSED: $problem; keeping ${target} without its authorized keys and ports"
    revoke_access "$target" || return 1
    return 0
  fi
  # Same file system as the target, so the final rename is atomic.
  staging="$(dirname -- "$target")/.identity.new"
  rm -rf -- "$staging" && mkdir -m 0755 -- "$staging" && chmod 0755 -- "$staging" || return 1
  for name in "${found[@]}"; do
    install -m "$(mode_of "$name")" -o 0 -g 0 -- "$source/$name" "$staging/$name" || return 1
  done
  sync -f -- "$staging" || return 1
  if [[ -e $target || -L $target ]]; then
    # RENAME_EXCHANGE: the old directory lands at $staging, then goes.
    mv --exchange --no-target-directory -- "$staging" "$target" || return 1
    rm -rf -- "$staging" || return 1
  else
    mv --no-target-directory -- "$staging" "$target" || return 1
  fi
  sync -f -- "$target" || return 1
  status="imported"
  log "imported ${#found[@]} files into ${target}: ${found[*]}"
}

# Writes a file in place by rename, so a reader never sees half of it.
publish() {
  local target=$1
  cat >"$target.new" && chmod 0644 -- "$target.new" && mv -f -- "$target.new" "$target"
}

# Each file on its own: a missing default resolv.conf must not cost the VM its hosts file.
prepare_runtime() {
  local identity=$1 runtime=$2 base_hosts=$3 default_resolv=$4 ok=0
  if [[ ! -d $runtime ]]; then
    mkdir -m 0755 -- "$runtime" || return 1
  fi
  if [[ -f $identity/resolv.conf ]]; then
    publish "$runtime/resolv.conf" <"$identity/resolv.conf" || ok=1
  else
    publish "$runtime/resolv.conf" <"$default_resolv" || ok=1
  fi
  {
    cat -- "$base_hosts" || ok=1
    if [[ -f $identity/hosts ]]; then
      printf '\n# From the VM identity (hosts)\n'
      cat -- "$identity/hosts" || ok=1
    fi
  } | publish "$runtime/hosts" || ok=1
  return "$ok"
}

# The disk holds the private host key: unmount it however the script ends.
release_source() {
  local source=$1
  if is_mounted "$source"; then
    # A busy mount is detached lazily rather than left in place: /run survives switch-root.
    umount -- "$source" || umount -l -- "$source" || log "failed to unmount ${source}"
  fi
}

main() {
  if (($# != 5 && $# != 6)); then
    echo "usage: identity-import SOURCE IDENTITY_DIR RUNTIME_DIR BASE_HOSTS DEFAULT_RESOLV_CONF [DEVICE]" >&2
    return 2
  fi
  local result=0
  source_dir=$1
  # Only this run may say the identity was accepted.
  rm -f -- "$3/identity-accepted" || result=1
  trap 'release_source "$source_dir"' EXIT
  if ! import_identity "$1" "$2" "${6:-}"; then
    status="failed: could not write ${2}"
    log "failed to write ${2}; it may be incomplete"
    result=1
  fi
  # The binds of /etc/resolv.conf and /etc/hosts need their sources whatever happened above.
  if ! prepare_runtime "$2" "$3" "$4" "$5"; then
    log "failed to prepare ${3}"
    result=1
  fi
  printf '%s\n' "$status" | publish "$3/identity-status" || result=1
  case $status in
  imported | absent) printf '%s\n' "$status" | publish "$3/identity-accepted" || result=1 ;;
  esac
  return "$result"
}

main "$@"
