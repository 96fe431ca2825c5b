# Everything `nix flake check` builds: each machine's system, the formatting of the Nix files, and
# (on x86_64-linux) the NixOS VM tests of this folder, which boot the real images.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  machinesHere = lib.filterAttrs (_: meta: meta.system == system) self.lib.machines;

  # srvos dev/checks.nix: every machine's toplevel is a check.
  toplevels = lib.mapAttrs' (
    name: _: lib.nameValuePair "toplevel-${name}" self.nixosConfigurations.${name}.config.system.build.toplevel
  ) machinesHere;

  formatting = pkgs.callPackage ./formatting.nix { };
in
toplevels // { inherit formatting; }
