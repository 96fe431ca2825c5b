# Thin wrappers over the ivm tool of this flake. Nix always runs as you (it refuses to work as root
# on a repository you own), so the tool and machines.json are built unprivileged, and SUDO goes only
# in front of the steps that talk to libvirt. Each variable below may be set in the environment,
# e.g. `SUDO=sudo just up web1` if your user may not manage libvirt (docs/operations.md, "Privilege"),
# or `HOST_CMD=host-spawn` inside a toolbox or distrobox container.

set positional-arguments

HOST_CMD := env("HOST_CMD", "")
# Empty: the recommended set-up reaches libvirt as you (libvirt group, polkit, or qemu:///session).
SUDO := env("SUDO", "")
JUST := env("JUST", "just")
NIX := env("NIX", HOST_CMD + " nix")
VIRSH := env("VIRSH", HOST_CMD + " " + SUDO + " virsh")
QEMU_IMG := env("QEMU_IMG", HOST_CMD + " qemu-img")
# The same precedence as the tool: LIBVIRT_URI, then libvirt's own LIBVIRT_DEFAULT_URI.
LIBVIRT_URI := env("LIBVIRT_URI", env("LIBVIRT_DEFAULT_URI", "qemu:///system"))
# Empty: libvirt picks UEFI firmware itself (secure boot off). Set both to force a firmware pair.
OVMF_CODE := env("OVMF_CODE", "")
OVMF_VARS := env("OVMF_VARS", "")

# The tool runs where HOST_CMD puts it, so the nix it calls itself is NIX without that prefix.
_tool_nix := trim(trim_start_match(trim(NIX), trim(HOST_CMD)))
# Everything the tool reads, passed with `env` because sudo drops the caller's environment.
_tool_env := "env " + quote("LIBVIRT_URI=" + LIBVIRT_URI) + " " + quote("OVMF_CODE=" + OVMF_CODE) + " " + quote("OVMF_VARS=" + OVMF_VARS) + " " + quote("NIX=" + _tool_nix) + _if_set_pool + _if_set_pool_path + _if_set_virt_type + _if_set_debug + _if_set_agent
_if_set_pool := if env("IVM_POOL", "") == "" { "" } else { " " + quote("IVM_POOL=" + env("IVM_POOL")) }
_if_set_pool_path := if env("IVM_POOL_PATH", "") == "" { "" } else { " " + quote("IVM_POOL_PATH=" + env("IVM_POOL_PATH")) }
_if_set_virt_type := if env("IVM_VIRT_TYPE", "") == "" { "" } else { " " + quote("IVM_VIRT_TYPE=" + env("IVM_VIRT_TYPE")) }
_if_set_debug := if env("IVM_DEBUG", "") == "" { "" } else { " " + quote("IVM_DEBUG=" + env("IVM_DEBUG")) }
# `ivm ssh` under sudo still reaches your ssh-agent.
_if_set_agent := if env("SSH_AUTH_SOCK", "") == "" { "" } else { " " + quote("SSH_AUTH_SOCK=" + env("SSH_AUTH_SOCK")) }
_project := quote(justfile_directory())
# A shell function `tool ARGS…`: builds the tool and machines.json as you (once per recipe), then
# runs `ivm --machines … ARGS…` on this project under HOST_CMD and SUDO.
_tool := 'tool() { if [ -z "${ivm:-}" ]; then ' + _as_you + '; ivm=$(' + NIX + ' build --no-link --print-out-paths .#ivm)/bin/ivm && machines=$(' + NIX + ' build --no-link --print-out-paths .#machines-json) || return; fi; ' + HOST_CMD + ' ' + SUDO + ' ' + _tool_env + ' "$ivm" --machines "$machines" --root ' + _project + ' --flake ' + _project + ' "$@"; }'
# Nix refuses to work as root on a repository another user owns: say how to run instead.
_as_you := 'if [ "$(id -u)" = 0 ] && [ "$(stat -c %u .)" != 0 ]; then echo "just: run just as $(stat -c %U .), who owns this project, not as root (Nix refuses to work as root on it); SUDO=sudo puts sudo in front of the libvirt steps only" >&2; exit 1; fi'
_names := NIX + " eval --raw .#lib.machines --apply 'm: builtins.concatStringsSep \" \" (builtins.attrNames m)'"

alias create := create-vm
alias define := define-vm
alias start := start-vm
alias stop := stop-vm
alias destroy := destroy-vm

# List the recipes (`just list-vms` lists the VMs)
list:
    @{{ JUST }} --justfile {{ quote(justfile()) }} --list

# List the VMs, the base image each runs and whether it is behind the current build
[no-exit-message]
list-vms *FLAGS:
    @{{ _tool }}; tool list "$@"

# Build the base image of a machine (default: every machine); prints the image path
[no-exit-message]
build NAME="":
    #!/usr/bin/env bash
    set -euo pipefail
    {{ _as_you }}
    if [ -n "$1" ]; then names=$1; else names=$({{ _names }}); fi
    for name in $names; do {{ NIX }} build --no-link --print-out-paths ".#image-$name"; done

# Write libvirt/<name>.xml, the domain XML of each machine (as `define-vm` would define it)
[no-exit-message]
build-libvirt-xml:
    #!/usr/bin/env bash
    set -euo pipefail
    {{ _as_you }}
    {{ _tool }}
    mkdir -p libvirt
    for name in $({{ _names }}); do
      # Written by this shell, so the file is yours whatever SUDO is; renamed only when complete.
      tool xml -- "$name" > "libvirt/.$name.xml.tmp" || { rm -f "libvirt/.$name.xml.tmp"; exit 1; }
      mv "libvirt/.$name.xml.tmp" "libvirt/$name.xml"
      echo "libvirt/$name.xml"
    done

# Create a VM's disks: shared base, boot overlay, /var disk and identity disk
[no-exit-message]
create-vm NAME:
    @{{ _tool }}; tool create -- "$@"

# Define (or update) the VM in libvirt
[no-exit-message]
define-vm NAME:
    @{{ _tool }}; tool define -- "$@"

# Start a defined VM
[no-exit-message]
start-vm NAME:
    @{{ _tool }}; tool start -- "$@"

# Build, create, define and start a VM in one go
[no-exit-message]
up NAME:
    @{{ _tool }}; tool up -- "$@"

# Shut a VM down (`just stop-vm web1 --force` powers it off after the timeout)
[no-exit-message]
stop-vm NAME *FLAGS:
    @{{ _tool }}; tool stop "$@"

# Move VMs to the current image and identity, keeping /var (`just upgrade --all` for every VM)
[no-exit-message]
upgrade +NAMES:
    @{{ _tool }}; tool upgrade "$@"

# Put a VM back on the base it ran before its last upgrade
[no-exit-message]
rollback NAME *FLAGS:
    @{{ _tool }}; tool rollback "$@"

# Delete base images no VM uses (`just gc --dry-run` to see what would go)
[no-exit-message]
gc *FLAGS:
    @{{ _tool }}; tool gc "$@"

# State, base, disks, /var usage and drift of the VMs (all, or the ones named)
[no-exit-message]
status *NAMES:
    @{{ _tool }}; tool status "$@"

# Log in to a VM as admin with its identity host key pinned (`just ssh web1 uptime`)
[no-exit-message]
ssh NAME *ARGS:
    @{{ _tool }}; tool ssh "$@"

# Undefine a VM and remove its boot and identity disks (add --delete-data to remove /var too)
[no-exit-message]
destroy-vm NAME *FLAGS:
    @{{ _tool }}; tool destroy "$@"

# Serial console of a VM (leave with Ctrl-])
[no-exit-message]
console NAME:
    @{{ _tool }}; tool console -- "$@"

# Run virsh against the same libvirt, e.g. `just virsh dominfo web1`
[no-exit-message]
virsh *ARGS:
    @{{ VIRSH }} -c {{ quote(LIBVIRT_URI) }} "$@"

# Show the qcow2 header of a machine's base image
[no-exit-message]
image-info NAME:
    @{{ _as_you }}; out=$({{ NIX }} build --no-link --print-out-paths ".#image-$1") && {{ QEMU_IMG }} info "$out/ivm.qcow2"
