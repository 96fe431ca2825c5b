# Packages for one platform: the tool, machines.json, and the image of every machine built for it.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  system = pkgs.stdenv.hostPlatform.system;
  machinesHere = lib.filterAttrs (_: meta: meta.system == system) self.lib.machines;

  imageOf = name: self.nixosConfigurations.${name}.config.system.build.ivmImage;
  images = lib.mapAttrs' (
    name: meta: lib.nameValuePair meta.image_attr (imageOf name)
  ) machinesHere;

  tool = rec {
    ivm = pkgs.callPackage ./package.nix { };
    default = ivm;
    machines-json = pkgs.callPackage ./machines-json.nix { inherit (self.lib) machines; };
  };

  clashes = lib.intersectLists (lib.attrNames images) (lib.attrNames tool);
  imageAttrs = lib.mapAttrsToList (_: meta: meta.image_attr) machinesHere;
in
if clashes != [ ] then
  throw "machines: image_attr ${lib.concatStringsSep ", " clashes} collides with a package of this flake; pick another image_attr in meta.nix"
else if lib.length imageAttrs != lib.length (lib.unique imageAttrs) then
  throw "machines: two machines share an image_attr (${lib.concatStringsSep ", " imageAttrs}); give each its own (machines whose images are equal already share one base volume)"
else
  tool // images
