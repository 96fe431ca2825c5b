# sshd with the VM's host key and authorized keys taken from /var/identity: key login only, no root.
{ config, lib, ... }:
let
  identity = config.ivm.identity.directory;
  hostKey = "${identity}/ssh_host_ed25519_key";
  hostCert = "${identity}/ssh_host_ed25519_key-cert.pub";
in
{
  # Custom hostKeys as in nixos/tests/openssh.nix; keys and logins from /var/identity are proven by
  # this flake's checks/identity.nix.
  services.openssh = {
    enable = true;
    hostKeys = [
      {
        path = hostKey;
        type = "ed25519";
      }
    ];
    # The key comes from the identity; generating one would give every boot of a VM without
    # identity a different key, and sshd-keygen cannot write to the identity anyway.
    generateHostKeys = false;
    # /var/identity/admin_authorized_keys and user_authorized_keys; nobody else has a file.
    authorizedKeysInHomedir = false;
    authorizedKeysFiles = lib.mkForce [ "${identity}/%u_authorized_keys" ];
    settings = {
      # The identity's certificate, when it carries one (the host signed the key with the user's CA).
      # Without the file sshd logs "Could not load host certificate" and serves the plain key:
      # OpenSSH sshd.c skips each HostCertificate it cannot load, match or parse (`continue`), and
      # the build-time `sshd -G -T` check (nixpkgs nixos/modules/services/networking/ssh/sshd.nix,
      # system.checks) prints the configuration before any key or certificate is read. A free-form
      # setting of that module's `settings` (its settingsFormat writes `HostCertificate PATH`).
      HostCertificate = hostCert;
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "no";
    };
  };

  # Without an identity there is no host key: sshd is skipped (and says so) rather than failing.
  systemd.services.sshd.unitConfig.ConditionPathExists = hostKey;

  # Its tmpfiles rules create /root/.ssh on the read-only root; root never logs in by SSH.
  systemd.tmpfiles.settings."ssh-root-provision" = lib.mkForce { };
}
