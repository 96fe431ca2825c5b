# machines.json: the metadata the tool reads (format: docs/operations.md). No identity, no secrets.
{ writeText, machines }:
writeText "machines.json" (
  builtins.toJSON {
    version = 1;
    inherit machines;
  }
)
