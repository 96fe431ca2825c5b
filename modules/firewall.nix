# nftables firewall: the image's base rules (SSH open) plus the ports the identity lists in
# tcp_ports and udp_ports, applied at boot into two sets the base rules accept.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  identity = config.ivm.identity.directory;

  applier = pkgs.writeShellApplication {
    name = "ivm-firewall-ports";
    runtimeInputs = [ pkgs.nftables ];
    text = builtins.readFile ./firewall-ports.sh;
    # The script reports each failure and exits non-zero at the end.
    bashOptions = [
      "nounset"
      "pipefail"
    ];
  };
in
{
  # The nftables backend of the NixOS firewall: nixos/tests/firewall.nix (backend = "nftables").
  # The identity's ports are this flake's own, proven by checks/identity.nix and identity-change.nix.
  networking.nftables.enable = true;
  networking.firewall.enable = true;

  # Declared first, so the input-allow chain of the table below can refer to them.
  networking.nftables.tables.nixos-fw.content = lib.mkBefore ''
    set ivm_tcp_ports {
      type inet_service
    }
    set ivm_udp_ports {
      type inet_service
    }
  '';

  networking.firewall.extraInputRules = ''
    tcp dport @ivm_tcp_ports accept
    udp dport @ivm_udp_ports accept
  '';

  systemd.services.ivm-firewall-ports = {
    description = "Open the firewall ports listed in ${identity}";
    wantedBy = [ "nftables.service" ];
    after = [ "nftables.service" ];
    partOf = [ "nftables.service" ];
    unitConfig.ReloadPropagatedFrom = [ "nftables.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      SyslogIdentifier = "ivm-firewall";
      ExecStart = "${lib.getExe applier} ${identity}";
      ExecReload = "${lib.getExe applier} ${identity}";
    };
  };
}
