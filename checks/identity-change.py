# Identity A opens 9000 and names A's resolver; identity B opens 9001 and names B's.
start_client()
guest = Guest(IVM["images"]["web1"], IVM["identity"]["a"]["disk"])
guest.boot()
machine_id = guest.file("/etc/machine-id").strip()

with subtest("identity A is in effect"):
    guest.listen(9000)
    guest.listen(9001)
    t.assertTrue(guest.reachable(9000))
    t.assertFalse(guest.reachable(9001))
    t.assertEqual(guest.file("/etc/resolv.conf"), fixture("a", "resolv.conf"))

guest.poweroff()
guest.boot(identity=IVM["identity"]["b"]["disk"])

with subtest("after a reboot with identity B, B's ports and resolver are in effect"):
    guest.listen(9000)
    guest.listen(9001)
    t.assertFalse(guest.reachable(9000))
    t.assertTrue(guest.reachable(9001))
    t.assertEqual(guest.file("/etc/resolv.conf"), fixture("b", "resolv.conf"))
    t.assertEqual(guest.file("/var/identity/tcp_ports"), fixture("b", "tcp_ports"))

with subtest("the machine-id did not change"):
    t.assertEqual(guest.file("/etc/machine-id").strip(), machine_id)

guest.poweroff()
