# `nix fmt`: treefmt running nixfmt over the tree; the flake's one choice of Nix formatter, which the
# dev shell and checks.formatting take from here (`.nixfmt`).
{ pkgs }:
let
  # nixfmt-rs (Rust) gives the official nixfmt's RFC 166 output byte for byte without the Haskell
  # toolchain, but it entered nixpkgs during the 26.05 cycle and may be absent from the pinned
  # branch: there the official RFC 166 formatter, pkgs.nixfmt, is used.
  nixfmt = if pkgs ? nixfmt-rs then pkgs.nixfmt-rs else pkgs.nixfmt;
in
pkgs.nixfmt-tree.override { nixfmtPackage = nixfmt; } // { inherit nixfmt; }
