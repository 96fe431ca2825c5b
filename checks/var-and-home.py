# /var lives on the var disk, formatted by the guest on its first boot; /home is bound from it.
start_client()
guest = Guest(IVM["images"]["web1"], IVM["identity"]["a"]["disk"])
guest.boot()

with subtest("/var is the var disk, ext4 and writable"):
    source, fstype, options = guest.run("findmnt -no SOURCE,FSTYPE,OPTIONS /var").split()
    t.assertEqual(source, guest.run("readlink -f /dev/disk/by-id/virtio-var").strip())
    t.assertEqual(fstype, "ext4")
    t.assertIn("rw", options.split(","))
    guest.run("sudo sh -c 'echo kept > /var/lib/ivm-test-marker'")

with subtest("the blank var disk was formatted during this first boot"):
    # The test made the disk blank just before; mkfs ran in the initrd (boot_time is to the second).
    t.assertGreaterEqual(guest.var_created(), guest.boot_time - 5)

with subtest("/home is a bind of /var/home"):
    t.assertTrue(guest.source_of("/home").endswith("[/home]"), guest.source_of("/home"))
    t.assertEqual(guest.source_of("/home").split("[")[0], source)
    guest.run("echo hello > ~/note", user="user")
    t.assertEqual(guest.file("/var/home/user/note"), "hello\n")
    t.assertEqual(guest.run("stat -c %U:%a /home/user").strip(), "user:700")

guest.reboot()

with subtest("files in /var and /home/user survive a reboot"):
    t.assertEqual(guest.file("/var/lib/ivm-test-marker"), "kept\n")
    t.assertEqual(guest.run("cat ~/note", user="user"), "hello\n")

with subtest("the var disk was not formatted again"):
    t.assertLess(guest.var_created(), guest.boot_time)

guest.poweroff()
