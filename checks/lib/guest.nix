# What every VM test shares: the fixture identities and their disks (made by the packaged tool's
# own `ivm identity-disk`, so the test disk and the tool's cannot drift), a client node that serves
# DHCP and logs in by SSH, and mkTest, which wraps a test script in runNixOSTest.
#
# The guest is not a test node: it is the built image (packages.image-<name>), booted by plain QEMU
# through create_machine() the way ivm runs it (UEFI, read-only overlay, var and identity disks).
# It has no test backdoor, so the scripts reach it over SSH from the client, the way a user does.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  ivm = self.packages.${system}.ivm;

  # The images the tests boot (`upgrade` goes from the first to the second) and the identities.
  machines = [
    "default"
    "web1"
  ];
  variants = [
    "a"
    "b"
  ];
  toplevel = name: self.nixosConfigurations.${name}.config.system.build.toplevel;

  guestMac = "52:54:00:12:01:32";
  guestIp = "192.168.1.50";

  # Fixture keys are made at build time: no private key is ever committed.
  hostKey = pkgs.runCommand "ivm-test-host-key" { nativeBuildInputs = [ pkgs.openssh ]; } ''
    mkdir $out
    ssh-keygen -q -t ed25519 -N "" -C root@ivm-test -f $out/ssh_host_ed25519_key
  '';
  clientKey = pkgs.runCommand "ivm-test-client-key" { nativeBuildInputs = [ pkgs.openssh ]; } ''
    mkdir $out
    ssh-keygen -q -t ed25519 -N "" -C client@ivm-test -f $out/id_ed25519
  '';

  # A complete identity folder, as machines/<name>/ holds it: fixture A, plus B's files for "b".
  identityDir =
    variant:
    pkgs.runCommand "ivm-test-identity-${variant}" { } ''
      mkdir $out
      cp ${../fixtures/identity-a}/* $out/
      ${lib.optionalString (variant == "b") "cp ${../fixtures/identity-b}/* $out/"}
      cp ${hostKey}/ssh_host_ed25519_key ${hostKey}/ssh_host_ed25519_key.pub $out/
      cp ${clientKey}/id_ed25519.pub $out/admin_authorized_keys
      cp ${clientKey}/id_ed25519.pub $out/user_authorized_keys
    '';

  identityDisk =
    variant:
    pkgs.runCommand "ivm-test-identity-${variant}.img" { nativeBuildInputs = [ ivm ]; } ''
      cp -r ${identityDir variant} identity
      chmod -R u+w identity
      chmod 600 identity/ssh_host_ed25519_key
      ivm identity-disk identity $out
    '';

  knownHosts = pkgs.runCommand "ivm-test-known-hosts" { } ''
    echo "${guestIp} $(cat ${hostKey}/ssh_host_ed25519_key.pub)" > $out
  '';

  # Everything a script needs from Nix, as one JSON value (the scripts stay plain Python).
  constants = {
    guest_ip = guestIp;
    guest_mac = guestMac;
    qemu = "${pkgs.qemu_test}/bin/qemu-system-x86_64";
    qemu_img = lib.getExe' pkgs.qemu-utils "qemu-img";
    ovmf_code = pkgs.OVMF.firmware;
    ovmf_vars = pkgs.OVMF.variables;
    host_key_pub = "${hostKey}/ssh_host_ed25519_key.pub";
    machines_json = "${self.packages.${system}.machines-json}";
    images = lib.genAttrs machines (name: "${self.packages.${system}."image-${name}"}");
    toplevels = lib.genAttrs machines (name: "${toplevel name}");
    identity = lib.genAttrs variants (variant: {
      dir = "${identityDir variant}";
      disk = "${identityDisk variant}";
    });
  };

  prelude = ''
    import json

    IVM: dict = json.loads(r"""${builtins.toJSON constants}""")
  '';

  client = {
    virtualisation.vlans = [ 1 ];
    networking.firewall.enable = false;
    # DHCP for the guest, with a fixed lease so the scripts know its address.
    services.dnsmasq = {
      enable = true;
      resolveLocalQueries = false;
      settings = {
        port = 0;
        interface = "eth1";
        bind-interfaces = true;
        # Static only: the guest's MAC gets its fixed address, nothing else gets one.
        dhcp-range = [ "192.168.1.0,static,255.255.255.0" ];
        dhcp-host = [ "${guestMac},${guestIp}" ];
      };
    };
    environment.etc."ivm-test/id_ed25519" = {
      source = "${clientKey}/id_ed25519";
      mode = "0400";
    };
    environment.etc."ivm-test/known_hosts".source = knownHosts;
  };
in
{
  inherit prelude identityDir identityDisk clientKey;

  # One test: the client node, the shared helper (guest.py) and the test's own script.
  mkTest =
    {
      name,
      script,
      # Boots of a QEMU guest under TCG (no KVM) take minutes; the whole test gets half an hour.
      globalTimeout ? 1800,
    }:
    pkgs.testers.runNixOSTest {
      name = "ivm-${name}";
      inherit globalTimeout;
      nodes.client = client;
      testScript = lib.concatStringsSep "\n" [
        prelude
        (builtins.readFile ./guest.py)
        (builtins.readFile script)
      ];
    };
}
