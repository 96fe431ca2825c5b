# Claim 4: the journal is persistent in /var/log/journal/<machine-id>, and the previous boot's logs
# are readable.
{ guest }:
guest.mkTest {
  name = "journald";
  script = ./journald.py;
}
