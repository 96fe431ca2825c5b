mkdir $out
qemu-img convert -f raw -O qcow2 /nix/store/00000000000000000000000000000000-ivm/ivm.raw $out/ivm.qcow2
