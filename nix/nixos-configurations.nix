# One NixOS system per machine folder: the ivm guest modules, the machine's own default.nix and the
# platform from its meta.nix. Nothing else about the machine enters the configuration, so two
# machines whose default.nix select the same modules share one image (identity is runtime data).
{ self, nixpkgs }:
builtins.mapAttrs (
  name: meta:
  nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      (../machines + "/${name}/default.nix")
      { nixpkgs.hostPlatform = meta.system; }
    ];
  }
) self.lib.machines
