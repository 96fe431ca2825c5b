# journald writes to /var/log/journal/<the identity's machine-id> from the start, across boots.
start_client()
guest = Guest(IVM["images"]["web1"], IVM["identity"]["a"]["disk"])
guest.boot()
machine_id = fixture("a", "machine-id").strip()

with subtest("the journal is persistent, in /var/log/journal/<machine-id>"):
    t.assertEqual(guest.run("ls /var/log/journal").split(), [machine_id])
    t.assertIn(
        f"/var/log/journal/{machine_id}/system.journal",
        guest.run("sudo journalctl --header --no-pager"),
    )
    guest.run("logger -t ivm-test first-boot-marker")
    guest.run("sudo journalctl --sync")

guest.reboot()

with subtest("the previous boot's logs are readable"):
    boots = guest.run("sudo journalctl --list-boots --no-pager | grep -cE '[0-9a-f]{32}'")
    t.assertGreaterEqual(int(boots), 2)
    t.assertIn("first-boot-marker", guest.run("sudo journalctl -b -1 -t ivm-test -o cat --no-pager"))

with subtest("both boots are in the same machine-id's journal"):
    t.assertEqual(guest.file("/etc/machine-id").strip(), machine_id)
    t.assertEqual(guest.run("ls /var/log/journal").split(), [machine_id])

guest.poweroff()
