# The disk image: GPT with an ESP (systemd-boot + the unified kernel image) and an erofs root
# holding the system closure, built by nixpkgs' image.repart, then converted to qcow2 — the file
# the tool imports as a shared base volume. Nothing in it depends on the machine's name.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.ivm.image;
  efiArch = pkgs.stdenv.hostPlatform.efiArch;
  inherit (config.system.boot.loader) ukiFile;

  # /bin/sh and /usr/bin/env, which activation would create on a writable root.
  rootLinks = pkgs.runCommand "ivm-root-links" { } ''
    mkdir -p $out/bin $out/usr/bin
    ln -s ${config.environment.binsh} $out/bin/sh
    ln -s ${config.environment.usrbinenv} $out/usr/bin/env
  '';

  raw = config.system.build.image;
in
{
  # image.repart is proven by nixos/tests/appliance-repart-image.nix (ESP with systemd-boot and a
  # UKI, booted by OVMF) and nixos/tests/activation/bashless-image.nix (erofs partition, lz4).
  imports = [ "${modulesPath}/image/repart.nix" ];

  options.ivm.image = {
    espSize = lib.mkOption {
      type = lib.types.str;
      default = "96M";
      description = "Size of the ESP (`SizeMinBytes=`); it holds systemd-boot and one UKI.";
      example = "256M";
    };

    compression = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "-z lz4" ];
      description = "mkfs.erofs options of the root: lz4 (as in bashless-image.nix) keeps it small and quick to read.";
      example = [ "-z lzma" ];
    };
  };

  config = {
    image.repart = {
      # A fixed name: the image path must not depend on which machine asked for it.
      name = "ivm";
      mkfsOptions.erofs = cfg.compression;
      partitions = {
        "10-esp" = {
          contents = {
            "/EFI/BOOT/BOOT${lib.toUpper efiArch}.EFI".source =
              "${config.systemd.package}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
            "/EFI/Linux/${ukiFile}".source = "${config.system.build.uki}/${ukiFile}";
          };
          repartConfig = {
            Type = "esp";
            Format = "vfat";
            SizeMinBytes = cfg.espSize;
          };
        };
        "20-root" = {
          storePaths = [
            config.system.build.toplevel
            rootLinks
          ];
          contents = {
            "/bin".source = "${rootLinks}/bin";
            "/usr".source = "${rootLinks}/usr";
          };
          repartConfig = {
            Type = "root";
            Format = config.fileSystems."/".fsType;
            Label = config.ivm.filesystem.rootLabel;
            Minimize = "best";
            MakeDirectories = config.ivm.filesystem.mountPoints;
          };
        };
      };
    };

    # The tool takes a directory holding exactly one *.qcow2.
    system.build.ivmImage =
      pkgs.runCommand "ivm-image"
        {
          nativeBuildInputs = [ pkgs.buildPackages.qemu-utils ];
          # Store paths inside the image are data, not run-time references (as in repart-image.nix).
          __structuredAttrs = true;
          unsafeDiscardReferences.out = true;
          passthru = {
            inherit raw;
            fileName = "${config.image.baseName}.qcow2";
          };
        }
        ''
          mkdir $out
          qemu-img convert -f raw -O qcow2 ${raw}/${config.image.fileName} $out/${config.image.baseName}.qcow2
        '';
  };
}
