# machines.json: the metadata the tool reads (design.md §5). No identity, no secrets.
{ writeText, machines }:
writeText "machines.json" (
  builtins.toJSON {
    version = 1;
    inherit machines;
  }
)
