# The Nix files are formatted as `nix fmt` leaves them. nixfmt-rs gives nixfmt's output byte for
# byte without the Haskell toolchain.
{
  lib,
  runCommand,
  nixfmt-rs,
}:
let
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };
in
runCommand "ivm-formatting" { nativeBuildInputs = [ nixfmt-rs ]; } ''
  cd ${src}
  find . -name '*.nix' -print0 | xargs -0 nixfmt --check
  touch $out
''
