# The QEMU guest agent, limited to the commands ivm and libvirt use: a guest agent left whole would
# let anyone with access to the host's channel run programs, read and write files or set passwords.
{ config, lib, ... }:
let
  cfg = config.ivm.guestAgent;
  agent = config.services.qemuGuest;
  allowed =
    cfg.allowedCommands
    ++ lib.optionals cfg.healthCheck [
      "guest-exec"
      "guest-exec-status"
    ];
in
{
  options.ivm.guestAgent = {
    allowedCommands = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "guest-[a-z0-9-]+");
      default = [
        # libvirt opens every exchange with these.
        "guest-sync"
        "guest-sync-delimited"
        "guest-ping"
        "guest-info"
        # `ivm ssh` finds a bridged VM's address (virDomainInterfaceAddresses, source agent).
        "guest-network-get-interfaces"
        # `ivm stop` / upgrade: libvirt shuts a VM down through the agent when it has one.
        "guest-shutdown"
        # What a health check or `virsh guestinfo --os` reads; nothing in it is secret.
        "guest-get-osinfo"
      ];
      description = ''
        The guest agent commands qemu-ga accepts (`--allow-rpcs`); every other command, such as
        guest-exec, guest-file-open or guest-set-user-password, is refused by the agent itself.
      '';
      example = [
        "guest-sync-delimited"
        "guest-ping"
      ];
    };

    healthCheck = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Also accept guest-exec and guest-exec-status, with which `ivm upgrade` runs the machine's
        `health_check` in the guest. The flake sets it for each machine whose meta.nix declares one.
        Anyone who can reach the agent's channel on the host can then run commands as root here.
      '';
    };
  };

  # The agent is the one nixpkgs' services.qemuGuest runs (nixos/modules/virtualisation/
  # qemu-guest-agent.nix, same on 26.05); only its command line gains the allow list. qemu-ga has
  # --allow-rpcs since QEMU 8.1 (both branches ship QEMU 10 or later).
  config = lib.mkIf agent.enable {
    systemd.services.qemu-guest-agent = {
      serviceConfig.ExecStart = lib.mkForce (
        lib.concatStringsSep " " [
          "${agent.package}/bin/qemu-ga"
          "--statedir /run/qemu-ga"
          "--allow-rpcs=${lib.concatStringsSep "," allowed}"
        ]
      );
      # The agent answering is the host's health signal after an upgrade, so a guest that refused
      # its identity disk (modules/identity-import.sh writes the marker only for an imported or
      # absent one) stays silent: the upgrade sees it unhealthy and rolls it back. A condition, so
      # the unit is skipped, not failed, and Restart=always does not retry it.
      unitConfig.ConditionPathExists = [ "${config.ivm.identity.runtimeDirectory}/identity-accepted" ];
    };
  };
}
