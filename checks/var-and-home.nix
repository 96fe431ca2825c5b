# Claim 2: /var is the var disk (ext4, writable, formatted on first boot only); /home is a bind of
# /var/home; what is written to both survives a reboot.
{ guest }:
guest.mkTest {
  name = "var-and-home";
  script = ./var-and-home.py;
}
