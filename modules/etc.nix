# An immutable /etc: an overlay of a read-only erofs image, with users managed by userborn, whose
# password files live on /var/lib/nixos behind symlinks in /etc.
{
  # Proven by nixos/tests/activation/etc-overlay-immutable.nix (immutable overlay, binds over files
  # inside it) and nixos/tests/userborn-immutable-etc.nix (userborn with it).
  system.etc.overlay = {
    enable = true;
    mutable = false;
  };
  services.userborn.enable = true;
}
