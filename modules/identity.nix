# Per-VM identity: the initrd copies the identity disk (serial `identity`) into /var/identity before
# anything reads it, so PID 1, journald and sshd see the VM's machine-id, hostname and keys from
# their first start. The binds onto /etc are in modules/identity-binds.nix.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.identity;

  importer = pkgs.writeShellApplication {
    name = "ivm-identity-import";
    text = builtins.readFile ./identity-import.sh;
    # The script handles every failure itself: a bad identity must never stop the boot.
    bashOptions = [
      "nounset"
      "pipefail"
    ];
  };

  diskMount = "${cfg.runtimeDirectory}/identity-disk";
  baseHosts = config.environment.etc.hosts.source;
  defaultResolvConf = pkgs.writeText "resolv.conf" cfg.defaultResolvConf;
in
{
  options.ivm.identity = {
    device = lib.mkOption {
      type = lib.types.str;
      default = "/dev/disk/by-id/virtio-identity";
      description = "The identity disk: raw ext4 with the identity files at its root, attached read-only.";
      example = "/dev/disk/by-label/identity";
    };

    directory = lib.mkOption {
      type = lib.types.str;
      default = "/var/identity";
      description = "Where the imported identity lives on /var (root-owned, 0755; the host key 0600).";
      example = "/var/lib/identity";
    };

    runtimeDirectory = lib.mkOption {
      type = lib.types.str;
      default = "/run/ivm";
      description = "Where the initrd writes the sources of /etc/resolv.conf and /etc/hosts.";
      example = "/run/identity";
    };

    deviceTimeout = lib.mkOption {
      type = lib.types.ints.positive;
      default = 10;
      description = "Seconds the initrd waits for the identity disk before booting with the previous identity.";
      example = 30;
    };

    defaultResolvConf = lib.mkOption {
      type = lib.types.lines;
      default = ''
        nameserver 127.0.0.53
        options edns0 trust-ad
        search .
      '';
      description = "/etc/resolv.conf when the identity has none: systemd-resolved's stub, which serves DHCP's DNS.";
      example = "nameserver 192.0.2.53";
    };
  };

  config = {
    assertions = [
      {
        assertion = lib.hasPrefix "/var/" cfg.directory;
        message = "ivm.identity.directory = \"${cfg.directory}\" is not on /var, the only disk the initrd can write; use a path under /var/.";
      }
      {
        assertion = config.boot.initrd.systemd.shell.enable;
        message = "boot.initrd.systemd.shell.enable = false removes the shell the identity import runs with; keep it enabled.";
      }
    ];

    # make-initrd-ng keeps no references, and the root holds only the system's closure: whatever the
    # import reads is copied into the initrd itself, so nothing depends on /sysroot/nix/store.
    boot.initrd.systemd.storePaths = [
      importer
      baseHosts
      defaultResolvConf
    ];

    # Pattern: the initrd units of nixos/modules/system/etc/etc-activation.nix and the /sysroot/run
    # bind of nixos/modules/system/boot/systemd/initrd.nix, which every systemd-initrd test boots.
    boot.initrd.systemd.services.ivm-identity = {
      description = "Import the VM identity into ${cfg.directory}";
      wantedBy = [ "initrd-fs.target" ];
      before = [
        "initrd-fs.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        # /var to write into (the base hosts and default resolv.conf are in the initrd's own store).
        RequiresMountsFor = [ "/sysroot/var" ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        SyslogIdentifier = "ivm-identity";
        # A refused identity is said on the serial console too, where the host can read it.
        StandardError = "journal+console";
        # "-": without the disk (or with a broken one) the script keeps the previous identity.
        ExecStartPre = [
          "/bin/mkdir -p ${diskMount}"
          "-/bin/udevadm wait --timeout=${toString cfg.deviceTimeout} ${cfg.device}"
          "-/bin/mount -t ext4 -o ro,nosuid,nodev,noexec ${cfg.device} ${diskMount}"
        ];
        ExecStart = lib.concatStringsSep " " [
          (lib.getExe importer)
          diskMount
          "/sysroot${cfg.directory}"
          cfg.runtimeDirectory
          "${baseHosts}"
          "${defaultResolvConf}"
          # A disk that is attached but does not mount counts as refused, not absent.
          cfg.device
        ];
        # The script unmounts the disk on every exit; these cover a script that never ran or was
        # killed (ExecStopPost= also runs after a failed start, ExecStartPost= only after success).
        ExecStartPost = [ "-/bin/rmdir ${diskMount}" ];
        ExecStopPost = [
          "-/bin/umount ${diskMount}"
          "-/bin/rmdir ${diskMount}"
        ];
      };
    };
  };
}
