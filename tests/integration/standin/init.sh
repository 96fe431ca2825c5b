#!/bin/busybox sh
# Stand-in guest /init: report on the serial console what this VM sees, then power off; with
# ivm.stay=1 keep running instead, with ivm.agent=1 also answering the guest agent (ping, and
# guest-exec of /bin/true or /bin/false only).
# Every step is independent, so one failure still ends with "IVM-REPORT done".

/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt/var /mnt/identity
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Kernel messages would interleave with the report lines on the same console.
dmesg -n 1

report() { echo "IVM-REPORT $*"; }

# Wait (up to ~10 s) for a path that appears asynchronously.
await() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e "$1" ]
}

if [ -d /sys/firmware/efi ]; then report efi=1; else report efi=0; fi

marker=- stay=0 agent=0
for word in $(cat /proc/cmdline); do
    case "$word" in
        ivm.marker=*) marker="${word#ivm.marker=}" ;;
        ivm.stay=1) stay=1 ;;
        ivm.agent=1) agent=1 ;;
    esac
done
report "marker=$marker"

for module in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$module" || report "error insmod=$module"
done

await /sys/block/vda || report "error no-virtio-disk"
boot= var= identity=
for dir in /sys/block/vd*; do
    [ -e "$dir" ] || continue
    name="${dir##*/}"
    serial="$(cat "$dir/serial" 2>/dev/null | tr -c 'A-Za-z0-9._\n-' '_')"
    report "disk name=$name serial=${serial:--} ro=$(cat "$dir/ro") size=$(($(cat "$dir/size") * 512))"
    case "$serial" in
        var) var="$name" ;;
        identity) identity="$name" ;;
        *) [ -n "$boot" ] || boot="$name" ;;
    esac
done

# Rewriting sector 0 with its own bytes is harmless if allowed; a read-only disk refuses it.
if [ -z "$boot" ] || ! await "/dev/$boot"; then
    report "boot-write=unknown disk=-"
elif dd if="/dev/$boot" of="/dev/$boot" bs=512 count=1 conv=notrunc,fsync 2>/dev/null; then
    report "boot-write=allowed disk=$boot"
else
    report "boot-write=denied disk=$boot"
fi

if [ -z "$var" ] || ! await "/dev/$var"; then
    report "disk-missing serial=var"
else
    # Format only a blank disk (first 64 KiB all zero); an unknown filesystem is left alone.
    if [ -z "$(dd if="/dev/$var" bs=4096 count=16 2>/dev/null | od -An -tx1 | tr -d ' 0*\n')" ]; then
        if mke2fs -L var "/dev/$var" >/dev/null 2>&1; then
            report "var formatted=yes"
        else
            report "error mke2fs=$var"
        fi
    else
        report "var formatted=no"
    fi
    if mount -t ext4 "/dev/$var" /mnt/var; then
        count="$(cat /mnt/var/counter 2>/dev/null)"
        case "$count" in '' | *[!0-9]*) count=0 ;; esac
        count=$((count + 1))
        echo "$count" >/mnt/var/counter
        sync
        report "var counter=$count"
        umount /mnt/var || report "error umount=var"
    else
        report "error mount=var"
    fi
fi

if [ -z "$identity" ] || ! await "/dev/$identity"; then
    report "disk-missing serial=identity"
elif mount -t ext4 -o ro "/dev/$identity" /mnt/identity; then
    for file in /mnt/identity/* /mnt/identity/.[!.]*; do
        [ -f "$file" ] || continue
        name="${file##*/}"
        set -- $(stat -c '%a %u %g %s' "$file")
        report "identity file=$name mode=0$1 uid=$2 gid=$3 size=$4"
        # The private key never goes to a console log.
        [ "$name" = ssh_host_ed25519_key ] && continue
        while IFS= read -r line || [ -n "$line" ]; do
            report "identity-line file=$name text=$line"
        done <"$file"
    done
    umount /mnt/identity
else
    report "error mount=identity"
fi

# One JSON member of an agent command line: `field LINE path` prints /bin/true for "path":"/bin/true".
field() { echo "$1" | sed -n "s/.*\"$2\" *: *\"\{0,1\}\([^\",}]*\).*/\1/p"; }

# A QEMU guest agent that knows libvirt's guest-sync handshake, guest-ping, and guest-exec with
# guest-exec-status for two argument-less commands: enough for a health check that passes or fails.
agent() {
    port= i=0
    while [ -z "$port" ] && [ $i -lt 100 ]; do # the port appears shortly after the module loads
        for dir in /sys/class/virtio-ports/*; do
            [ "$(cat "$dir/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port="/dev/${dir##*/}"
        done
        [ -n "$port" ] || sleep 0.1
        i=$((i + 1))
    done
    if [ -z "$port" ] || ! await "$port"; then
        report "error agent-port-missing"
        return
    fi
    report "agent port=$port"
    pid=0
    while :; do
        # One read-write open: a virtio-serial port refuses a second one.
        exec 3<>"$port"
        while IFS= read -r line <&3; do
            case "$line" in
                *guest-sync*) echo "{\"return\": $(echo "$line" | sed -n 's/.*"id" *: *\([0-9]*\).*/\1/p')}" >&3 ;;
                *guest-ping*) echo '{"return": {}}' >&3 ;;
                *guest-exec-status*)
                    code="$(cat "/tmp/exec-$(field "$line" pid)" 2>/dev/null)"
                    if [ -n "$code" ]; then
                        echo "{\"return\": {\"exited\": true, \"exitcode\": $code}}" >&3
                    else
                        echo '{"error": {"class": "GenericError", "desc": "Invalid parameter pid"}}' >&3
                    fi
                    ;;
                *guest-exec*)
                    path="$(field "$line" path)"
                    case "$path" in
                        /bin/true | /bin/false)
                            pid=$((pid + 1))
                            "$path"
                            echo $? >"/tmp/exec-$pid"
                            echo "{\"return\": {\"pid\": $pid}}" >&3
                            ;;
                        *) echo '{"error": {"class": "GenericError", "desc": "stand-in agent runs /bin/true and /bin/false only"}}' >&3 ;;
                    esac
                    ;;
                *) echo '{"error": {"class": "CommandNotFound", "desc": "stand-in agent"}}' >&3 ;;
            esac
        done
        exec 3<&-
        sleep 0.2 # the host end closed: wait for the next connection
    done
}

if [ "$stay" = 1 ]; then
    [ "$agent" = 1 ] && agent &
    report done
    while :; do sleep 60; done
fi

report done
sync
# Let the console drain: output still queued when QEMU exits is lost.
sleep 1
poweroff -f
# Not reached unless poweroff failed; an exiting /init would panic the kernel.
while :; do sleep 60; done
