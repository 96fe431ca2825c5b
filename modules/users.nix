# The two accounts every guest has: `admin` (wheel) and `user`. No passwords: they log in with the
# keys in the identity (modules/ssh.nix).
{ lib, ... }:
{
  users.users = {
    admin = {
      isNormalUser = true;
      # Fixed IDs keep /var/home owners right when a later image adds users.
      uid = 1000;
      extraGroups = [ "wheel" ];
      description = "Administrator (sudo without password)";
    };
    user = {
      isNormalUser = true;
      uid = 1001;
      description = "Unprivileged user";
    };
  };

  # Keys arrive at run time from the identity disk, so evaluation sees no way to log in.
  users.allowNoPasswordLogin = true;

  # admin has no password to type; wheel membership is the grant (nixos/tests/sudo.nix).
  security.sudo.wheelNeedsPassword = lib.mkDefault false;
}
