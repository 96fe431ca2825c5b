# The QEMU guest agent, limited to the commands ivm and libvirt use: a guest agent left whole would
# let anyone with access to the host's channel run programs, read and write files or set passwords.
{ config, lib, ... }:
let
  cfg = config.ivm.guestAgent;
  agent = config.services.qemuGuest;
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
  };

  # The agent is the one nixpkgs' services.qemuGuest runs (nixos/modules/virtualisation/
  # qemu-guest-agent.nix, same on 26.05); only its command line gains the allow list. qemu-ga has
  # --allow-rpcs since QEMU 8.1 (both branches ship QEMU 10 or later).
  config = lib.mkIf agent.enable {
    systemd.services.qemu-guest-agent.serviceConfig.ExecStart = lib.mkForce (
      lib.concatStringsSep " " [
        "${agent.package}/bin/qemu-ga"
        "--statedir /run/qemu-ga"
        "--allow-rpcs=${lib.concatStringsSep "," cfg.allowedCommands}"
      ]
    );
  };
}
