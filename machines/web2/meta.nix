# How the host runs this VM (plain data; see nix/machine-meta.nix for every field and default).
{
  system = "x86_64-linux";
  vcpus = 2;
  memory_mib = 1024;
  var_size_gib = 10;
}
