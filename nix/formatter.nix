# `nix fmt`: treefmt running nixfmt over the tree. nixfmt-rs gives nixfmt's output byte for byte
# without the Haskell toolchain.
{ pkgs }:
pkgs.nixfmt-tree.override { nixfmtPackage = pkgs.nixfmt-rs; }
