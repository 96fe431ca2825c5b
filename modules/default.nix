# The ivm guest: a NixOS system with a read-only root, state on /var and identity from its own disk.
# Exported as nixosModules.default; a machine's default.nix adds its roles on top.
{
  imports = [
    ./base.nix
    ./guest-agent.nix
    ./boot.nix
    ./filesystem.nix
    ./etc.nix
    ./identity.nix
    ./identity-binds.nix
    ./network.nix
    ./users.nix
    ./ssh.nix
    ./firewall.nix
    ./journald.nix
    ./image.nix
  ];
}
