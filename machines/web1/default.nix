# A web server. web1 and web2 select the same modules, so they share one image; what tells them
# apart (machine-id, hostname, keys, open ports) is the identity in this folder.
{
  imports = [ ../../modules/roles/web.nix ];
}
