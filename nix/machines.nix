# Every folder under machines/ is a machine; its meta.nix, checked against machine-meta.nix and
# completed with defaults, is the machine's entry in machines.json (format: docs/operations.md).
{ lib }:
let
  dir = ../machines;
  names = lib.attrNames (lib.filterAttrs (_: type: type == "directory") (builtins.readDir dir));

  # The tool accepts the same names (a hostname label); anything else fails here, not at run time.
  checkName =
    name:
    if builtins.match "[a-z]([a-z0-9-]{0,61}[a-z0-9])?" name != null then
      name
    else
      throw "machines/${name}: '${name}' is not a valid machine name; rename the folder to a hostname label ([a-z][a-z0-9-]*, at most 63 characters, not ending in '-')";

  checkNetwork =
    name: network:
    let
      named = lib.elem network.type [
        "network"
        "bridge"
      ];
    in
    if !named && network.name != null then
      throw "machines/${name}/meta.nix: network.name = \"${network.name}\" makes no sense with network.type = \"${network.type}\"; remove network.name"
    else if named && network.name == null then
      throw "machines/${name}/meta.nix: network.type = \"${network.type}\" needs network.name (the libvirt network or host bridge)"
    else if network.type != "user" && network.forwards != [ ] then
      throw "machines/${name}/meta.nix: network.forwards needs network.type = \"user\"; remove it or change the type"
    else
      lib.filterAttrs (
        key: value: value != null && (key != "forwards" || network.type == "user")
      ) network;

  # One machine's entry from its meta.nix data; `file` names it in errors. Exported as
  # lib.machineEntry, so the tests judge the same cases as the tool (tests/cases/machines.json).
  entry =
    name: file: data:
    let
      evaluated = lib.evalModules {
        specialArgs = { inherit name; };
        modules = [
          ./machine-meta.nix
          {
            _file = file;
            config = data;
          }
        ];
      };
      meta = removeAttrs evaluated.config [ "_module" ];
    in
    meta
    // {
      network = checkNetwork (checkName name) meta.network;
      mac = if meta.mac == null then null else lib.toLower meta.mac;
    };

  load =
    name:
    let
      file = dir + "/${name}/meta.nix";
    in
    if builtins.pathExists file then
      entry name file (import file)
    else
      throw "machines/${name} has no meta.nix; add one (at least `{ system = \"x86_64-linux\"; }`)";
in
{
  machines = lib.genAttrs (map checkName names) load;
  inherit entry checkName;
}
