# nixosModules.host on a NixOS hypervisor: at boot, libvirtd runs, the ivm-fleet unit succeeds, and
# web1 is defined and started in the pool with the tool and image of this flake revision (pattern of
# nixpkgs nixos/tests/libvirtd.nix). The guest is started, not waited for: under TCG (no nested
# KVM) its boot takes minutes, and booting the image is the other tests' claim.
{ self, pkgs }:
pkgs.testers.runNixOSTest {
  name = "ivm-host-module";
  globalTimeout = 1800;

  nodes.host = {
    imports = [ self.nixosModules.host ];
    virtualisation = {
      cores = 2;
      memorySize = 3072;
      diskSize = 8192;
    };
    services.ivm = {
      enable = true;
      machines = [ "web1" ];
    };
  };

  testScript = builtins.readFile ./host-module.py;
}
