# Claim 3: the identity disk becomes /var/identity and the VM's machine-id, hostname, resolv.conf,
# hosts, SSH host key, logins and open ports.
{ guest }:
guest.mkTest {
  name = "identity";
  script = ./identity.py;
}
