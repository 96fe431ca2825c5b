# The placeholder + bind mount pattern: /etc/machine-id, /etc/hostname, /etc/resolv.conf and
# /etc/hosts are empty or default files in the immutable /etc, with the VM's own files bound over
# them read-only. The binds are made in the initrd, right after the identity import, so they are in
# place when PID 1 reads /etc/machine-id and /etc/hostname.
{
  config,
  lib,
  utils,
  ...
}:
let
  identity = config.ivm.identity.directory;
  runtime = config.ivm.identity.runtimeDirectory;
  initrd = config.boot.initrd.systemd;

  # Whatever mounts the /etc overlay in the initrd: a mount unit for /sysroot/etc (nixpkgs 26.05),
  # or a service on a nixpkgs that mounts it from one (initrd-etc-overlay.service). The binds land
  # inside that overlay, so they must come after it, said outright rather than left to the path.
  etcMounters =
    map (m: "${utils.escapeSystemdPath m.where}.mount") (
      lib.filter (m: m.where == "/sysroot/etc") initrd.mounts
    )
    ++ lib.optional (initrd.services ? initrd-etc-overlay) "initrd-etc-overlay.service";

  # Binding over a file inside the immutable overlay is what
  # nixos/tests/activation/etc-overlay-immutable.nix does to /etc/filemount.
  bind = source: {
    device = source;
    fsType = "none";
    options = [
      "bind"
      "ro"
      # No identity yet (a VM started without its disk): boot with the placeholder.
      "nofail"
      "x-systemd.after=ivm-identity.service"
      # nofail drops the generator's Before= on the target: without this, switch-root may not wait.
      "x-systemd.before=initrd-fs.target"
    ]
    ++ map (unit: "x-systemd.after=${unit}") etcMounters;
    # Its source's file system first (/var, or /run bound into /sysroot in the initrd).
    depends = [ (dirOf source) ];
    neededForBoot = true;
  };
in
{
  # The bind targets must be regular files in the overlay, not symlinks into the store.
  environment.etc = {
    # Empty: systemd then runs with a transient ID instead of refusing to boot; the identity's ID
    # is bound over it before PID 1 starts. Defined here because nixpkgs 26.05 does not; newer
    # nixpkgs sets the same placeholder with mkDefault, which this plain definition overrides.
    machine-id = {
      text = "";
      mode = "0444";
    };
    hostname = {
      text = "";
      mode = "0644";
    };
    "resolv.conf" = lib.mkForce {
      text = config.ivm.identity.defaultResolvConf;
      mode = "0644";
    };
    # NixOS's own hosts file, copied instead of linked; the initrd appends the identity's lines.
    hosts.mode = "0644";
  };

  # The hostname is identity, not configuration: the same image serves every VM.
  networking.hostName = lib.mkDefault "";

  assertions = [
    {
      assertion = etcMounters != [ ];
      message = "nothing in boot.initrd.systemd mounts /sysroot/etc (no mount unit, no initrd-etc-overlay.service): the /etc identity binds cannot be ordered after the /etc overlay; modules/identity-binds.nix must learn this nixpkgs' way of mounting it.";
    }
    {
      assertion = config.networking.hostName == "";
      message = "networking.hostName = \"${config.networking.hostName}\": ivm guests take their hostname from the identity disk (machines/<name>/hostname), so one image serves many VMs; remove the setting.";
    }
  ];

  fileSystems = {
    "/etc/machine-id" = bind "${identity}/machine-id";
    "/etc/hostname" = bind "${identity}/hostname";
    "/etc/resolv.conf" = bind "${runtime}/resolv.conf";
    "/etc/hosts" = bind "${runtime}/hosts";
  };
}
