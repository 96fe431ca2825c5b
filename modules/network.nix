# Networking: systemd-networkd with DHCP on every Ethernet link, systemd-resolved for names. The
# hostname is not part of the image: it comes from the identity (modules/identity-binds.nix).
{ lib, ... }:
{
  # networkd is the appliance profile's choice too; DHCP works on libvirt's default network
  # (a networkd DHCP client: nixos/tests/systemd-networkd-dhcpserver.nix).
  networking.useNetworkd = true;
  networking.useDHCP = lib.mkDefault true;

  # resolvconf writes /etc/resolv.conf, impossible on an immutable /etc (comment in
  # nixos/tests/activation/etc-overlay-immutable.nix); resolved serves DHCP's DNS servers instead.
  # nixos/tests/systemd-resolved.nix.
  services.resolved.enable = true;
  networking.resolvconf.enable = false;
}
