# The tool end to end on a real libvirt (pattern of nixpkgs nixos/tests/libvirtd.nix): the packaged
# ivm creates, defines and starts web1 from its built image on a NixOS host running libvirtd, and
# the VM answers SSH with the identity's host key.
{
  self,
  pkgs,
  guest,
}:
let
  inherit (pkgs) lib;
  ivm = self.packages.${pkgs.stdenv.hostPlatform.system}.ivm;
in
pkgs.testers.runNixOSTest {
  name = "ivm-libvirt";
  # Emulated (TCG) inside the test VM when the host has no nested KVM: allow an hour.
  globalTimeout = 3600;

  nodes.host = {
    virtualisation = {
      cores = 2;
      memorySize = 3072;
      diskSize = 8192;
      libvirtd.enable = true;
    };
    environment.systemPackages = [ ivm ];
    environment.etc."ivm-test/id_ed25519" = {
      source = "${guest.clientKey}/id_ed25519";
      mode = "0400";
    };
  };

  testScript = lib.concatStringsSep "\n" [
    guest.prelude
    (builtins.readFile ./libvirt.py)
  ];
}
