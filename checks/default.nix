# Everything `nix flake check` builds: each machine's system, the formatting of the Nix files, and
# (on x86_64-linux) the NixOS VM tests of this folder, which boot the real images. A test is a pair
# <name>.nix (calls guest.mkTest, or runNixOSTest for host-module) + <name>.py (its script); the
# slower libvirt test is in slow/.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  machinesHere = lib.filterAttrs (_: meta: meta.system == system) self.lib.machines;

  # srvos dev/checks.nix: every machine's toplevel is a check.
  toplevel = name: self.nixosConfigurations.${name}.config.system.build.toplevel;
  toplevels = lib.mapAttrs' (
    name: _: lib.nameValuePair "toplevel-${name}" (toplevel name)
  ) machinesHere;

  formatting = pkgs.callPackage ./lib/formatting.nix {
    inherit (import ../nix/formatter.nix { inherit pkgs; }) nixfmt;
  };

  guest = import ./lib/guest.nix { inherit self pkgs; };

  # Tests discovered from the directory (lanzaboote nix/tests, disko tests/).
  testFiles = lib.filterAttrs (
    file: type: type == "regular" && lib.hasSuffix ".nix" file && file != "default.nix"
  ) (builtins.readDir ./.);
  # Each test takes what it names of these: a guest test `{ guest }`, a host test `{ self, pkgs }`.
  loadTest =
    file:
    let
      test = import (./. + "/${file}");
    in
    test (
      builtins.intersectAttrs (builtins.functionArgs test) {
        inherit guest self pkgs;
      }
    );
  vmTests = lib.mapAttrs' (
    file: _: lib.nameValuePair (lib.removeSuffix ".nix" file) (loadTest file)
  ) testFiles;
in
toplevels
// { inherit formatting; }
# The tests boot x86_64 images under OVMF; the example machines are x86_64.
// lib.optionalAttrs (system == "x86_64-linux") vmTests
