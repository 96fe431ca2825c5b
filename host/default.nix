# The ivm hypervisor: libvirtd, and a oneshot unit that brings this flake's machines up with the
# tool and images of the same flake revision. Exported as nixosModules.host; `self` is this flake.
{ self }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) types;
  cfg = config.services.ivm;
  system = pkgs.stdenv.hostPlatform.system;
  machinesHere = lib.filterAttrs (_: meta: meta.system == system) self.lib.machines;
  selected = lib.filterAttrs (name: _: lib.elem name cfg.machines) machinesHere;
  unknown = lib.filter (name: !(machinesHere ? ${name})) cfg.machines;

  # machines.json of the chosen machines only: `ivm list` with it shows this host's fleet.
  machinesJson = pkgs.callPackage ../nix/machines-json.nix { machines = selected; };
  imageOf = meta: self.packages.${system}.${meta.image_attr};
  # One `ivm apply` per image: --image takes one image, and machines sharing one share its base.
  byImage = lib.groupBy (name: selected.${name}.image_attr) (lib.attrNames selected);
  images = lib.mapAttrsToList (_: names: imageOf selected.${lib.head names}) byImage;
  networks = lib.unique (
    lib.mapAttrsToList (_: meta: meta.network.name) (
      lib.filterAttrs (_: meta: meta.network.type == "network") selected
    )
  );

  ivm = lib.getExe cfg.package;
  virsh = "${lib.getExe' config.virtualisation.libvirtd.package "virsh"} --connect ${lib.escapeShellArg cfg.libvirtUri}";
  # What every run of the tool on this host gets: the machines, the project, the daemon.
  toolArgs = [
    "--machines"
    "${machinesJson}"
    "--root"
    projectDir
    "--connect"
    cfg.libvirtUri
  ];
  environment = {
    IVM_POOL = cfg.pool.name;
    # The tool's temporary files (a base image's copy) are read by path by the libvirt daemon,
    # so they live in CacheDirectory, not in the unit's private /tmp.
    TMPDIR = "/var/cache/ivm";
    XDG_CACHE_HOME = "/var/cache/ivm";
    # The tool's locks: a hand run through ivm-host takes the same ones as the unit.
    XDG_RUNTIME_DIR = "/run/ivm-fleet";
  }
  // lib.optionalAttrs (cfg.pool.path != null) { IVM_POOL_PATH = cfg.pool.path; };
  apply =
    names:
    lib.escapeShellArgs (
      toolArgs
      ++ [ "apply" ]
      ++ names
      ++ [
        "--image"
        "${imageOf selected.${lib.head names}}"
        # The images are store paths already: nothing is evaluated or built at boot.
        "--no-eval"
      ]
    );

  # The networks the machines name (autostarted, so libvirt-guests finds them at boot), then one
  # apply per image; every step is tried, and the unit fails if any did.
  networkScript = ''
    if defined=$(${virsh} net-list --all --name) && active=$(${virsh} net-list --name); then
    ${lib.concatMapStrings (
      net:
      let
        arg = lib.escapeShellArg net;
      in
      ''
        if ! grep -qxF -- ${arg} <<<"$defined"; then
          echo "ivm-fleet: libvirt network ${net} is not defined; define it (virsh net-define) or change network.name in the machines' meta.nix" >&2
          failed=1
        else
          ${virsh} net-autostart ${arg} >/dev/null || failed=1
          grep -qxF -- ${arg} <<<"$active" || ${virsh} net-start ${arg} || failed=1
        fi
      ''
    ) networks}
    else
      failed=1
    fi
  '';
  fleetScript = ''
    failed=0
    ${lib.optionalString (networks != [ ]) networkScript}
    ${lib.concatMapStrings (names: ''
      ${ivm} ${apply names} || failed=1
    '') (lib.attrValues byImage)}
    exit "$failed"
  '';

  # `sudo ivm-host status`: the tool as the unit runs it (user, machines, project, pool, locks).
  hostTool = pkgs.writeShellApplication {
    name = "ivm-host";
    text = ''
      if [ "$(id -u)" != 0 ]; then
        echo "ivm-host: error: run it as root (sudo ivm-host ...); it runs ivm as the ivm user" >&2
        exit 2
      fi
      exec ${lib.getExe' pkgs.util-linux "runuser"} -u ivm -- ${lib.getExe' pkgs.coreutils "env"} \
        ${lib.escapeShellArgs (lib.mapAttrsToList (name: value: "${name}=${value}") environment)} \
        ${ivm} ${lib.escapeShellArgs toolArgs} "$@"
    '';
  };

  toText = value: if builtins.isPath value then toString value else value;
  projectDir = toText cfg.projectDir;
  under = dir: path: path == dir || lib.hasPrefix "${dir}/" path;
  # ProtectHome= hides these from the unit (systemd.exec(5)).
  hiddenDirs = [
    "/home"
    "/root"
    "/run/user"
  ];
in
{
  options.services.ivm = {
    enable = lib.mkEnableOption "ivm VMs of this flake on this host's libvirt";

    package = lib.mkOption {
      type = types.package;
      default = self.packages.${system}.ivm;
      defaultText = lib.literalExpression "self.packages.\${system}.ivm";
      description = "The ivm tool; by default the one from the flake revision the images come from.";
    };

    machines = lib.mkOption {
      type = types.listOf types.str;
      default = lib.attrNames machinesHere;
      defaultText = lib.literalMD "every machine of this flake whose `meta.nix` names this host's system";
      description = "The machines (folders of this flake's `machines/`) this host runs.";
      example = [
        "web1"
        "web2"
      ];
    };

    projectDir = lib.mkOption {
      # A Nix path is accepted only so the assertion below can refuse it with a reason.
      type = types.either types.str types.path;
      default = "/var/lib/ivm/project";
      description = ''
        The project folder on this host, read and written at run time: `machines/<name>/` holds
        each VM's identity, the SSH host private key included, which the tool generates when
        missing. A string naming a directory, never a Nix path: the private keys must not enter
        the Nix store. Owned by the `ivm` user, outside /home, /root and /run/user.
      '';
      example = "/srv/ivm";
    };

    pool = {
      name = lib.mkOption {
        type = types.strMatching "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
        default = "ivm";
        description = "The libvirt storage pool of the VMs' disks (`IVM_POOL`); the tool creates it on first use.";
      };
      path = lib.mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The pool's directory (`IVM_POOL_PATH`); null: `/var/lib/libvirt/images/<name>`.";
        example = "/srv/vm-disks";
      };
    };

    libvirtUri = lib.mkOption {
      type = types.str;
      default = "qemu:///system";
      description = "The local libvirt daemon the VMs run on; it beats every machine's `libvirt_uri`.";
    };

    autostart = lib.mkOption {
      type = types.bool;
      default = true;
      description = ''
        Bring the fleet up at boot and after each `nixos-rebuild switch` that changes the tool,
        the images or the machine list (`ivm apply`: create, upgrade, define, start; unchanged
        VMs are left alone). Off: the unit runs only when started (`systemctl start ivm-fleet`).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !builtins.isPath cfg.projectDir;
        message = "services.ivm.projectDir = ${projectDir} is a Nix path, which would copy the machines' private host keys into the Nix store; give the directory as a string: \"${projectDir}\"";
      }
      {
        assertion = !lib.hasPrefix builtins.storeDir projectDir && !builtins.hasContext projectDir;
        message = "services.ivm.projectDir = ${projectDir} is in the Nix store, which is world-readable and read-only; give a directory on this host as a string, e.g. \"/var/lib/ivm/project\"";
      }
      {
        assertion = lib.hasPrefix "/" projectDir;
        message = "services.ivm.projectDir = \"${projectDir}\" is not an absolute path; give the full path, e.g. \"/var/lib/ivm/project\"";
      }
      {
        assertion = !lib.any (dir: under dir projectDir) hiddenDirs;
        message = "services.ivm.projectDir = \"${projectDir}\" is under ${lib.concatStringsSep ", " hiddenDirs}, which the ivm-fleet unit cannot see (ProtectHome); move it, e.g. to /var/lib/ivm/project";
      }
      {
        assertion = unknown == [ ];
        message = "services.ivm.machines: ${lib.concatStringsSep ", " unknown} is not a machine of this flake for ${system}; choose among: ${lib.concatStringsSep ", " (lib.attrNames machinesHere)}";
      }
      {
        assertion = builtins.match "qemu(\\+unix)?:///system(\\?.*)?" cfg.libvirtUri != null;
        message = "services.ivm.libvirtUri = \"${cfg.libvirtUri}\" is not this host's system libvirt daemon; use qemu:///system (the module manages local VMs only)";
      }
      {
        assertion = cfg.pool.path == null || lib.hasPrefix "/" cfg.pool.path;
        message = "services.ivm.pool.path = \"${toString cfg.pool.path}\" is not an absolute path; give the full path of the pool's directory";
      }
    ];

    # nixos/modules/virtualisation/libvirtd.nix: UEFI needs nothing more. Its `qemu.ovmf` options
    # are removed (an assertion fires if set); the OVMF images that QEMU ships are linked into
    # /run/libvirt/nix-ovmf and described in /var/lib/qemu/firmware, where libvirt's firmware
    # autoselection (the domains' `<os firmware="efi">`) finds them.
    virtualisation.libvirtd.enable = true;

    users.users.ivm = {
      isSystemUser = true;
      group = "ivm";
      # libvirtd.nix's polkit rule lets the libvirtd group manage qemu:///system.
      extraGroups = [ "libvirtd" ];
      home = "/var/lib/ivm";
      description = "ivm fleet";
    };
    users.groups.ivm = { };
    environment.systemPackages = [ hostTool ];

    systemd.tmpfiles.settings.ivm = {
      ${projectDir}.d = {
        user = "ivm";
        group = "ivm";
        mode = "0750";
      };
      # The tool's locks, shared by the unit and `ivm-host`: not a RuntimeDirectory, which systemd
      # removes whenever the unit stops (a restart mid-run would drop locks still held).
      ${environment.XDG_RUNTIME_DIR}.d = {
        user = "ivm";
        group = "ivm";
        mode = "0700";
      };
    };

    systemd.services.ivm-fleet = {
      description = "ivm: bring this flake's VMs up";
      requires = [ "libvirtd.service" ];
      # After libvirt-guests: it resumes the VMs that ran before a reboot, which apply then finds.
      after = [
        "libvirtd.service"
        "libvirt-guests.service"
        "network.target"
      ];
      wantedBy = lib.optional cfg.autostart "multi-user.target";
      # A rebuild with other images, tool or machines re-runs it (switch-to-configuration).
      restartTriggers = [
        cfg.package
        machinesJson
      ]
      ++ images;
      restartIfChanged = cfg.autostart;
      enableStrictShellChecks = true;
      path = [
        pkgs.coreutils
        pkgs.gnugrep
      ];
      inherit environment;
      script = fleetScript;

      # systemd.exec(5). Only libvirt's socket is needed: the daemon (root) does the privileged work.
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        User = "ivm";
        Group = "ivm";
        UMask = "0077";
        StateDirectory = "ivm";
        CacheDirectory = "ivm";
        CacheDirectoryMode = "0700";
        ReadWritePaths = [
          projectDir
          environment.XDG_RUNTIME_DIR
        ];
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        # Not PrivateDevices, and /dev/kvm allowed: the tool picks KVM over TCG by access(2) to
        # /dev/kvm (python/ivm/hypervisor/host.py), which the device cgroup would deny.
        DevicePolicy = "closed";
        DeviceAllow = [ "/dev/kvm rw" ];
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [ "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        # A refused call fails (the tool reports it) instead of killing the process.
        SystemCallErrorNumber = "EPERM";
      };
    };
  };
}
