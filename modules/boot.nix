# How the guest boots: UEFI firmware runs systemd-boot from the ESP, which starts the unified kernel
# image; a systemd initrd mounts the root and /var, imports the identity and hands over.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.boot;
in
{
  options.ivm.boot = {
    serialConsole = lib.mkOption {
      type = lib.types.str;
      default = if pkgs.stdenv.hostPlatform.isx86 then "ttyS0" else "ttyAMA0";
      defaultText = lib.literalExpression ''if isx86 then "ttyS0" else "ttyAMA0"'';
      description = ''
        Serial port that carries the kernel and systemd console (what `virsh console` and the
        NixOS tests read). It is the last `console=`, so it also becomes /dev/console.
      '';
      example = "ttyS1";
    };
  };

  config = {
    # The initrd imports the identity before switch-root (modules/identity.nix); only the systemd
    # initrd can do that with units. Proven with a repart image in nixos/tests/appliance-repart-image.nix.
    boot.initrd.systemd.enable = true;

    # systemd-boot is put on the ESP by the image builder (modules/image.nix), as in
    # nixos/tests/appliance-repart-image.nix: no boot loader is installed at activation.
    boot.loader.grub.enable = false;
    boot.loader.efi.canTouchEfiVariables = false;

    boot.kernelParams = [
      "console=tty0"
      "console=${cfg.serialConsole},115200"
      # The ESP stays unmounted (the boot disk is read-only); don't let systemd try to mount it.
      "systemd.gpt_auto=no"
    ];
  };
}
