# An example role: a static web server on port 80. Its port is opened by the VM's identity
# (tcp_ports), not by the image, so each VM decides whether it serves.
{ pkgs, ... }:
{
  services.static-web-server = {
    enable = true;
    listen = "[::]:80";
    root = pkgs.writeTextDir "index.html" ''
      <!doctype html>
      <title>ivm</title>
      <p>Served from a read-only root.</p>
    '';
  };
}
