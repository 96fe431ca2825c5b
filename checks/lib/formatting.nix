# The Nix files are formatted as `nix fmt` leaves them, with the formatter nix/formatter.nix chooses.
{
  lib,
  runCommand,
  nixfmt,
}:
let
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../..;
  };
in
runCommand "ivm-formatting" { nativeBuildInputs = [ nixfmt ]; } ''
  cd ${src}
  find . -name '*.nix' -print0 | xargs -0 nixfmt --check
  touch $out
''
