# Development shell: the tool's Python dependencies and the linters and tools its tests use.
{ pkgs }:
pkgs.mkShell {
  packages = [
    (pkgs.python3.withPackages (ps: [
      ps.click
      ps.lxml
      ps.libvirt
      ps.pytest
      ps.hypothesis
      ps.mypy
      ps.types-lxml
    ]))
    pkgs.ruff
    pkgs.libvirt
    pkgs.qemu-utils
    pkgs.e2fsprogs
    pkgs.openssh
    pkgs.just
    (import ./formatter.nix { inherit pkgs; }).nixfmt
  ];

  # Run the tool from the working tree (`python -m ivm`) without installing it.
  shellHook = ''
    export PYTHONPATH="$PWD/python''${PYTHONPATH:+:$PYTHONPATH}"
  '';
}
