# Tests too slow for `nix flake check`: they run a VM inside a test VM (nested virtualisation, or
# minutes of emulation without it). Exposed as legacyPackages.<system>.slowChecks; run one with
#   nix build .#legacyPackages.x86_64-linux.slowChecks.libvirt -L
{ self, pkgs }:
let
  inherit (pkgs) lib;
  guest = import ../lib/guest.nix { inherit self pkgs; };
in
lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == "x86_64-linux") {
  libvirt = import ./libvirt.nix { inherit self pkgs guest; };
}
