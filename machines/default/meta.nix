# How the host runs this VM (plain data; see nix/machine-meta.nix for every field and default).
{
  system = "x86_64-linux";
}
