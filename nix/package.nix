# The ivm tool, packaged as nixpkgs packages Python apps (pkgs/by-name/mk/mkosi/package.nix).
{
  lib,
  python3Packages,
  e2fsprogs,
  qemu-utils,
  openssh,
  libvirt,
  util-linux,
}:
let
  pyproject = lib.importTOML ../pyproject.toml;
  # The source files and the test selection; scripts/rehearse-nix-check reads the same file.
  check = lib.importJSON ./package-check.json;
  # Tools the tool runs: mkfs.ext4/debugfs (identity disk), qemu-img, ssh-keygen/ssh, virsh console.
  runtimeTools = [
    e2fsprogs
    qemu-utils
    openssh
    libvirt
  ];
in
python3Packages.buildPythonApplication {
  pname = pyproject.project.name;
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions (map (path: ../. + "/${path}") check.fileset);
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = with python3Packages; [
    click
    lxml
    libvirt
  ];

  # The unit tests also make partitioned test images (sfdisk, blkid) and run property tests.
  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    # pyproject.toml gives every test a timeout; without the plugin pytest ignores it.
    python3Packages.pytest-timeout
    python3Packages.hypothesis
    util-linux
  ]
  ++ runtimeTools;

  # Only the unit tests: integration tests need a libvirt daemon, nix tests need Nix. No HOME in
  # preCheck: the tool must work without a writable home, and the rehearsal runs it without one.
  inherit (check) enabledTestPaths pythonImportsCheck;

  makeWrapperArgs = [
    "--prefix"
    "PATH"
    ":"
    (lib.makeBinPath runtimeTools)
  ];

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.mit;
    mainProgram = "ivm";
    platforms = lib.platforms.linux;
  };
}
