# The flake apps: each runs one ivm command with this flake's machines.json and this flake as the
# image source, so the metadata and the images always come from the same revision.
{ self, pkgs }:
let
  inherit (pkgs) lib;
  inherit (self.packages.${pkgs.stdenv.hostPlatform.system}) ivm machines-json;

  launcher =
    name: command:
    pkgs.writeShellScript "ivm-${name}" ''
      exec ${lib.getExe ivm} --machines ${machines-json} --flake ${self} ${command} "$@"
    '';

  mkApp = name: command: description: {
    type = "app";
    program = toString (launcher name command);
    meta = { inherit description; };
  };
in
builtins.mapAttrs (name: args: mkApp name args.command args.description) {
  default = {
    command = "";
    description = "ivm, with this flake's machines";
  };
  create-vm = {
    command = "create";
    description = "Create a VM's disks: base image, boot overlay, /var and identity disks";
  };
  define-vm = {
    command = "define";
    description = "Define (or update) a VM's libvirt domain";
  };
  start-vm = {
    command = "start";
    description = "Start a defined VM";
  };
  stop-vm = {
    command = "stop";
    description = "Shut a VM down";
  };
  upgrade-vm = {
    command = "upgrade";
    description = "Move VMs to the current image, keeping /var";
  };
  destroy-vm = {
    command = "destroy";
    description = "Undefine a VM and remove its disks (/var only with --delete-data)";
  };
  list-vms = {
    command = "list";
    description = "List VMs, the base each runs and drift from the current build";
  };
  up = {
    command = "up";
    description = "Build, create, define and start a VM";
  };
}
