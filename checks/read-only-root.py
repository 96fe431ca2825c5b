# The image's root is read-only: mounted ro, erofs, and even root cannot write to /, /etc, the
# store or /usr.
start_client()
guest = Guest(IVM["images"]["web1"], IVM["identity"]["a"]["disk"])
guest.boot()

with subtest("/ is mounted read-only, from the erofs root partition"):
    fstype, options = guest.run("findmnt -no FSTYPE,OPTIONS /").split()
    t.assertEqual(fstype, "erofs")
    t.assertIn("ro", options.split(","))
    t.assertIn("/dev/disk/by-partlabel/ivm-root", guest.run("cat /proc/cmdline /etc/fstab"))

with subtest("writing to /, /etc, /nix/store and /usr fails with EROFS, even as root"):
    for directory in ["/", "/etc", "/nix/store", "/usr", "/usr/bin"]:
        out = guest.fails(f"sudo touch {directory}/ivm-probe")
        t.assertIn("Read-only file system", out, directory)
    out = guest.fails("sudo sh -c 'echo x >> /etc/os-release'")
    t.assertIn("Read-only file system", out)

with subtest("/etc is the immutable overlay"):
    fstype, options = guest.run("findmnt -no FSTYPE,OPTIONS /etc").split()
    t.assertEqual(fstype, "overlay")
    t.assertIn("ro", options.split(","))
    t.assertNotIn("upperdir", options)

with subtest("the boot disk itself is read-only"):
    root_disk = guest.run("lsblk -no PKNAME $(findmnt -no SOURCE /)").strip()
    t.assertEqual(guest.file(f"/sys/block/{root_disk}/ro").strip(), "1")

guest.poweroff()
