# Opens the ports the identity lists: loads tcp_ports and udp_ports into the nftables sets that the
# base ruleset accepts (modules/firewall.nix). Runs after nftables.service, and again whenever the
# ruleset is reloaded (which empties the sets).
#
#   firewall-ports IDENTITY_DIR
#
# A file with a bad line is ignored as a whole (and logged): its set stays empty.
set -uo pipefail
export LC_ALL=C

readonly identity=${1:?usage: firewall-ports IDENTITY_DIR}
status=0

# Prints the ports of one file, comma-separated; fails on the first line that is not a port.
ports_of() {
  local file=$1 line found=()
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -z $line || $line == "#"* ]] && continue
    if [[ ! $line =~ ^[0-9]{1,5}$ ]] || ((10#$line < 1 || 10#$line > 65535)); then
      echo "ivm-firewall: $file: '$line' is not a port number from 1 to 65535; opening none of its ports" >&2
      return 1
    fi
    found+=("$((10#$line))")
  done <"$file"
  local IFS=,
  echo "${found[*]}"
}

for proto in tcp udp; do
  set_name="ivm_${proto}_ports"
  nft flush set inet nixos-fw "$set_name" || status=1
  file="$identity/${proto}_ports"
  [[ -f $file ]] || continue
  if ports=$(ports_of "$file") && [[ -n $ports ]]; then
    if nft add element inet nixos-fw "$set_name" "{ $ports }"; then
      echo "ivm-firewall: open $proto ports: $ports" >&2
    else
      status=1
    fi
  fi
done
exit "$status"
