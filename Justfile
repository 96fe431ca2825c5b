# Thin wrappers over the flake apps (`nix run .#<app>`), which run the ivm tool with this flake's
# machines.json. The variables below can be set in the environment, e.g. `SUDO= just list` when your
# user may manage libvirt, or HOST_CMD=host-spawn from a toolbox or distrobox container.

HOST_CMD := env_var_or_default("HOST_CMD", "")
SUDO := env_var_or_default("SUDO", "sudo")
JUST := env_var_or_default("JUST", "just")
NIX := env_var_or_default("NIX", HOST_CMD + " nix")
VIRSH := env_var_or_default("VIRSH", HOST_CMD + " " + SUDO + " virsh")
QEMU_IMG := env_var_or_default("QEMU_IMG", HOST_CMD + " qemu-img")
LIBVIRT_URI := env_var_or_default("LIBVIRT_URI", "qemu:///system")
# Empty: libvirt picks UEFI firmware itself (secure boot off). Set both to force a firmware pair.
OVMF_CODE := env_var_or_default("OVMF_CODE", "")
OVMF_VARS := env_var_or_default("OVMF_VARS", "")

# The tool reads these; sudo would drop them, so they are passed with `env`.
TOOL_ENV := "env LIBVIRT_URI=" + LIBVIRT_URI + " OVMF_CODE=" + OVMF_CODE + " OVMF_VARS=" + OVMF_VARS
APP := HOST_CMD + " " + SUDO + " " + TOOL_ENV + " " + NIX + " run .#"

# List the recipes
default:
    @{{JUST}} --list

# Build the base image of a machine (default: every machine); prints the image path
build NAME="":
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "{{NAME}}" ]; then names="{{NAME}}"; else names=$({{NIX}} eval --raw .#lib.machines --apply 'm: builtins.concatStringsSep " " (builtins.attrNames m)'); fi
    for name in $names; do {{NIX}} build --no-link --print-out-paths ".#image-$name"; done

# Write libvirt/<name>.xml, the domain XML of each machine (as `define-vm` would define it)
build-libvirt-xml:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p libvirt
    for name in $({{NIX}} eval --raw .#lib.machines --apply 'm: builtins.concatStringsSep " " (builtins.attrNames m)'); do
      {{APP}}default -- xml "$name" > "libvirt/$name.xml"
      echo "libvirt/$name.xml"
    done

# Create a VM's disks: shared base, boot overlay, /var disk and identity disk
create-vm NAME:
    {{APP}}create-vm -- {{NAME}}

# Define (or update) the VM in libvirt
define-vm NAME:
    {{APP}}define-vm -- {{NAME}}

# Start a defined VM
start-vm NAME:
    {{APP}}start-vm -- {{NAME}}

# Build, create, define and start a VM in one go
up NAME:
    {{APP}}up -- {{NAME}}

# Shut a VM down
stop-vm NAME:
    {{APP}}stop-vm -- {{NAME}}

# Move VMs to the current image and identity, keeping /var (`just upgrade --all` for every VM)
upgrade +NAMES:
    {{APP}}upgrade-vm -- {{NAMES}}

# Put a VM back on the base it ran before its last upgrade
rollback NAME:
    {{APP}}default -- rollback {{NAME}}

# Delete base images no VM uses (`just gc --dry-run` to see what would go)
gc *FLAGS:
    {{APP}}default -- gc {{FLAGS}}

# State, base, disks, /var usage and drift of the VMs (all, or the ones named)
status *NAMES:
    {{APP}}default -- status {{NAMES}}

# Log in to a VM as admin with its identity host key pinned (`just ssh web1 -- uptime`)
ssh NAME *ARGS:
    {{APP}}default -- ssh {{NAME}} {{ARGS}}

# Undefine a VM and remove its boot and identity disks (add --delete-data to remove /var too)
destroy-vm NAME *FLAGS:
    {{APP}}destroy-vm -- {{NAME}} {{FLAGS}}

# List the VMs, the base image each runs and whether it is behind the current build
list:
    {{APP}}list-vms

# Serial console of a VM (leave with Ctrl-])
console NAME:
    {{APP}}default -- console {{NAME}}

# Run virsh against the same libvirt, e.g. `just virsh dominfo web1`
virsh *ARGS:
    {{VIRSH}} -c {{LIBVIRT_URI}} {{ARGS}}

# Show the qcow2 header of a machine's base image
image-info NAME:
    {{QEMU_IMG}} info "$({{NIX}} build --no-link --print-out-paths .#image-{{NAME}})"/*.qcow2
