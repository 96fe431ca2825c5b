# Claim 6: a changed identity disk (other tcp_ports and resolv.conf) takes effect at the next boot,
# as `ivm upgrade` relies on.
{ guest }:
guest.mkTest {
  name = "identity-change";
  script = ./identity-change.py;
}
