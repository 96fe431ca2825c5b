{
  description = "Immutable NixOS VM images, and ivm: many libvirt VMs from one shared base image";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      lib =
        let
          machines = import ./nix/machines.nix { inherit lib; };
        in
        {
          inherit (machines) machines;
          # How meta.nix data becomes a machines.json entry, for the rule tests.
          machineEntry = machines.entry;
          machineName = machines.checkName;
        };

      nixosModules = {
        default = ./modules;
        web = ./modules/roles/web.nix;
        # A NixOS hypervisor running this flake's machines (services.ivm).
        host = import ./host { inherit self; };
      };

      nixosConfigurations = import ./nix/nixos-configurations.nix { inherit self nixpkgs; };

      packages = forAllSystems (pkgs: import ./nix/packages.nix { inherit self pkgs; });

      apps = forAllSystems (pkgs: import ./nix/apps.nix { inherit self pkgs; });

      devShells = forAllSystems (pkgs: {
        default = import ./nix/devshell.nix { inherit pkgs; };
      });

      formatter = forAllSystems (pkgs: import ./nix/formatter.nix { inherit pkgs; });

      checks = forAllSystems (pkgs: import ./checks { inherit self pkgs; });

      legacyPackages = forAllSystems (pkgs: {
        slowChecks = import ./checks/slow { inherit self pkgs; };
      });
    };
}
