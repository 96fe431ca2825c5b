# One NixOS system per machine folder: the ivm guest modules, the machine's own default.nix, the
# platform from its meta.nix, and whether its agent runs a health check (meta.nix `health_check`).
# Nothing else about the machine enters the configuration, so two machines whose default.nix select
# the same modules share one image (identity is runtime data).
{ self, nixpkgs }:
builtins.mapAttrs (
  name: meta:
  nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      (../machines + "/${name}/default.nix")
      {
        nixpkgs.hostPlatform = meta.system;
        ivm.guestAgent.healthCheck = meta.health_check != [ ];
      }
    ];
  }
) self.lib.machines
