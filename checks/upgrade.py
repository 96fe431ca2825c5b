# An upgrade swaps the boot image and keeps the var disk: image A (machine `default`), then image B
# (machine `web1`) on the same var and identity disks.
start_client()
guest = Guest(IVM["images"]["default"], IVM["identity"]["a"]["disk"])
guest.boot()
machine_id = guest.file("/etc/machine-id").strip()

with subtest("image A runs and data is written to /var and /home"):
    t.assertEqual(guest.run("readlink -f /run/current-system").strip(), IVM["toplevels"]["default"])
    guest.run("sudo sh -c 'mkdir -p /var/lib/ivm-test && echo from-a > /var/lib/ivm-test/data'")
    guest.run("echo from-a > ~/note", user="user")
    created = guest.var_created()
    identity_inode = guest.run("stat -c %i /var/identity").strip()

guest.poweroff()
guest.boot(image=IVM["images"]["web1"])

with subtest("image B runs on the same disks"):
    t.assertEqual(guest.run("readlink -f /run/current-system").strip(), IVM["toplevels"]["web1"])
    t.assertNotEqual(IVM["toplevels"]["web1"], IVM["toplevels"]["default"])

with subtest("/var and /home kept their data and were not formatted"):
    t.assertEqual(guest.file("/var/lib/ivm-test/data"), "from-a\n")
    t.assertEqual(guest.run("cat ~/note", user="user"), "from-a\n")
    t.assertEqual(guest.var_created(), created)

with subtest("the identity was imported again and the machine-id is unchanged"):
    # Each import puts a new directory in place of /var/identity.
    t.assertNotEqual(guest.run("stat -c %i /var/identity").strip(), identity_inode)
    t.assertGreaterEqual(int(guest.run("stat -c %Z /var/identity")), guest.boot_time)
    t.assertEqual(guest.file("/etc/machine-id").strip(), machine_id)
    t.assertEqual(guest.run("ls /var/log/journal").split(), [machine_id])

guest.poweroff()
