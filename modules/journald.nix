# Persistent journal in /var/log/journal/<machine-id>; the identity import settles the machine-id
# in the initrd, so journald in the real root writes to the VM's own directory from its first line.
{ config, lib, ... }:
let
  cfg = config.ivm.journald;
in
{
  options.ivm.journald = {
    maxUse = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = "1G";
      description = "Cap on the journal's disk use on /var (`SystemMaxUse=`); null leaves journald's default.";
      example = "500M";
    };
  };

  # Proven by checks/journald.nix (nixpkgs boots journald in nixos/tests/systemd-journal.nix).
  config = {
    services.journald.storage = "persistent";
    services.journald.extraConfig = lib.mkIf (cfg.maxUse != null) "SystemMaxUse=${cfg.maxUse}";
  };
}
