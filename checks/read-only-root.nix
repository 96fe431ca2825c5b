# Claim 1: the root, /etc, the store and /usr cannot be written; /etc is the immutable overlay.
{ guest }:
guest.mkTest {
  name = "read-only-root";
  script = ./read-only-root.py;
}
