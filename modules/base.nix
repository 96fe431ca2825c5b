# What every ivm guest is: an image-based appliance without Perl, running as a QEMU guest.
{ lib, modulesPath, ... }:
{
  imports = [
    # No Nix, no switching, static users; nixpkgs boots this kind of system in
    # nixos/tests/appliance-repart-image.nix.
    "${modulesPath}/profiles/image-based-appliance.nix"
    # systemd initrd, etc overlay and userborn instead of the Perl activation;
    # proven by nixos/tests/activation/perlless.nix.
    "${modulesPath}/profiles/perlless.nix"
    # virtio drivers in the initrd.
    "${modulesPath}/profiles/qemu-guest.nix"
  ];

  # The store is read-only and Nix is off (appliance profile): nothing to collect.
  nix.gc.automatic = false;

  # The QEMU guest agent on the channel ivm's domains carry: how `ivm ssh` finds the address of a
  # VM on a bridge, where libvirt has no DHCP lease to read.
  services.qemuGuest.enable = lib.mkDefault true;

  # Guests log in UTC; a machine can pick another zone.
  time.timeZone = lib.mkDefault "UTC";

  # The release whose state formats /var starts with; keep it when moving to newer images.
  system.stateVersion = lib.mkDefault "26.05";
}
