# The file system layout: a read-only erofs root, /var on its own disk (formatted by the guest on
# first boot), /home bound from /var/home, and tmpfs for /tmp.
{ config, lib, ... }:
let
  cfg = config.ivm.filesystem;
in
{
  options.ivm.filesystem = {
    rootLabel = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_-]{1,36}";
      default = "ivm-root";
      description = "GPT partition label of the root partition, which the initrd mounts by label.";
      example = "appliance-root";
    };

    varDevice = lib.mkOption {
      type = lib.types.str;
      default = "/dev/disk/by-id/virtio-var";
      description = "Block device of /var: the tool attaches the var disk with serial `var`.";
      example = "/dev/vdb";
    };

    mountPoints = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [
        "/dev"
        "/etc"
        "/home"
        "/proc"
        "/root"
        "/run"
        "/srv"
        "/sys"
        "/tmp"
        "/var"
      ];
      description = ''
        Directories made in the root image. Nothing can create them at boot on a read-only root
        (systemd's switch-root ignores EROFS for its base directories).
      '';
      example = [
        "/dev"
        "/mnt"
      ];
    };
  };

  config = {
    fileSystems = {
      # erofs cannot be written at all, whatever mounts it. No nixpkgs test boots an erofs `/`
      # (bashless-image.nix mounts erofs as /nix/store over a tmpfs root): checks/read-only-root.nix does.
      "/" = {
        device = "/dev/disk/by-partlabel/${cfg.rootLabel}";
        fsType = "erofs";
        options = [ "ro" ];
      };

      # systemd-makefs formats the disk only when it holds no file system yet (x-systemd.makefs).
      "/var" = {
        device = cfg.varDevice;
        fsType = "ext4";
        autoFormat = true;
        neededForBoot = true;
      };

      # Mounted in the initrd, where systemd's fstab generator prefixes the bind source with /sysroot.
      "/home" = {
        device = "/var/home";
        fsType = "none";
        options = [
          "bind"
          "x-systemd.after=ivm-var-layout.service"
        ];
        neededForBoot = true;
      };
    };

    # A fresh /var has no home yet; make it before the bind (tmpfiles runs too late for that).
    boot.initrd.systemd.services.ivm-var-layout = {
      description = "Create /var/home on the var disk";
      wantedBy = [ "initrd-fs.target" ];
      before = [
        "initrd-fs.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        RequiresMountsFor = [ "/sysroot/var" ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "/bin/mkdir -p -m 0755 /sysroot/var/home";
      };
    };

    boot.tmp.useTmpfs = true;

    # /bin/sh and /usr/bin/env are baked into the image (modules/image.nix); the activation snippets
    # that would rewrite them fail on a read-only root.
    system.activationScripts.binsh = lib.mkForce "";
    system.activationScripts.usrbinenv = lib.mkForce "";

    # Its tmpfiles rules write to /lib64 on the root.
    environment.stub-ld.enable = false;
  };
}
