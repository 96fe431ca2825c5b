# Claim 5: booting another image (another machine's configuration) on the same var and identity
# disks keeps /var and /home, re-imports the identity and keeps the machine-id.
{ guest }:
guest.mkTest {
  name = "upgrade";
  script = ./upgrade.py;
}
