# The schema of machines/<name>/meta.nix: plain data, typed here so a mistake fails evaluation
# with the file and option that are wrong; defaults fill what a machine leaves out.
{ lib, name, ... }:
let
  inherit (lib) types;

  # The libvirt URIs the tool accepts (python/ivm/hypervisor/uri.py says why each other is refused):
  # local daemons, and ssh or TLS to a host; no ext or tcp transport, no command=, netcat=, keyfile=,
  # pkipath=, no_verify=, known_hosts= or other parameter that runs a program or weakens a check.
  host = ''([A-Za-z0-9_][A-Za-z0-9._-]*@)?([A-Za-z0-9][A-Za-z0-9.-]*|[[][0-9A-Fa-f:.]+[]])(:[0-9]{1,5})?'';
  path = "/(system|session)";
  mode = "mode=(auto|legacy|direct)";
  sshParam = "(${mode}|no_tty=[01]|sshauth=[a-z-]+(,[a-z-]+)*)";
  unixParam = "(${mode}|socket=/[A-Za-z0-9_./-]+)";
  libvirtUri = lib.concatStringsSep "|" [
    "qemu://${path}(\\?${mode})?"
    "qemu\\+unix://${path}(\\?${unixParam}(&${unixParam})?)?"
    "qemu\\+(ssh|libssh|libssh2)://${host}${path}(\\?${sshParam}(&${sshParam})*)?"
    "qemu(\\+tls)?://${host}${path}(\\?${mode})?"
    "test:///default"
  ];
in
{
  options = {
    system = lib.mkOption {
      type = types.enum [
        "x86_64-linux"
        "aarch64-linux"
      ];
      description = "Platform the machine's image is built for (`nixpkgs.hostPlatform`).";
      example = "aarch64-linux";
    };

    vcpus = lib.mkOption {
      type = types.ints.between 1 512;
      default = 2;
      description = "Virtual CPUs of the domain.";
      example = 4;
    };

    memory_mib = lib.mkOption {
      type = types.ints.between 64 4194304;
      default = 2048;
      description = "Memory of the domain in MiB.";
      example = 4096;
    };

    var_size_gib = lib.mkOption {
      type = types.ints.between 1 65536;
      default = 20;
      description = "Size of the sparse /var disk in GiB (only its used blocks take space).";
      example = 50;
    };

    network = lib.mkOption {
      type = types.submodule {
        options = {
          type = lib.mkOption {
            type = types.enum [
              "network"
              "bridge"
              "none"
            ];
            description = "A libvirt network, a host bridge, or no NIC at all.";
            example = "bridge";
          };
          name = lib.mkOption {
            type = types.nullOr (types.strMatching "[A-Za-z0-9_.:-]{1,64}");
            default = null;
            description = "Name of the libvirt network or host bridge; unset for `none`.";
            example = "br0";
          };
        };
      };
      default = {
        type = "network";
        name = "default";
      };
      description = "Where the VM's NIC is plugged.";
      example = {
        type = "bridge";
        name = "br0";
      };
    };

    mac = lib.mkOption {
      # Unicast only (the low bit of the first octet clear); either case, written in lowercase.
      type = types.nullOr (types.strMatching "[0-9A-Fa-f][02468aceACE](:[0-9A-Fa-f]{2}){5}");
      default = null;
      description = "Fixed unicast MAC address; null derives a stable one from the machine-id.";
      example = "52:54:00:12:34:56";
    };

    libvirt_uri = lib.mkOption {
      type = types.nullOr (types.strMatching "(${libvirtUri})");
      default = null;
      description = ''
        libvirt URI of the host running this VM; null means $LIBVIRT_URI or qemu:///system.
        Accepted: qemu:///system, qemu:///session, qemu+unix:///system?socket=PATH,
        qemu+ssh://[USER@]HOST[:PORT]/system (also libssh, libssh2), qemu+tls://HOST/system.
        Refused: the ext and tcp transports and every parameter but mode, no_tty, sshauth and
        (with unix) socket, since a URI from a commit could run a program or leak the host key.
      '';
      example = "qemu+ssh://root@host1/system";
    };

    image_attr = lib.mkOption {
      # A Nix attribute name without quotes or dots (`.#a.b` would select b inside a).
      type = types.strMatching "[A-Za-z_][A-Za-z0-9_-]*";
      default = "image-${name}";
      defaultText = lib.literalExpression ''"image-''${name}"'';
      description = "Flake package the tool builds to get this machine's base image.";
      example = "image-web";
    };

    health_check = lib.mkOption {
      type = types.listOf (types.strMatching ".+");
      default = [ ];
      description = ''
        Command (absolute path, then arguments; no shell) that `ivm upgrade` runs in the guest through
        the QEMU guest agent after restarting it on a new base: exit 0 means healthy. Empty: the agent
        answering is the whole health signal.
      '';
      example = [
        "/run/current-system/sw/bin/systemctl"
        "is-active"
        "nginx.service"
      ];
    };
  };
}
