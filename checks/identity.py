# Everything that tells this VM apart comes from its identity disk.
start_client()
guest = Guest(IVM["images"]["web1"], IVM["identity"]["a"]["disk"])
guest.boot()
machine_id = fixture("a", "machine-id").strip()

with subtest("/var/identity holds the identity files, root-owned, with fixed modes"):
    listing = guest.run("sudo stat -c '%n %a %U %G' /var/identity /var/identity/*").splitlines()
    modes = {line.split()[0]: line.split()[1:] for line in listing}
    t.assertEqual(modes.pop("/var/identity"), ["755", "root", "root"])
    t.assertEqual(modes.pop("/var/identity/ssh_host_ed25519_key"), ["600", "root", "root"])
    names = sorted(path.name for path in Path(IVM["identity"]["a"]["dir"]).iterdir())
    t.assertEqual(sorted([path.split("/")[-1] for path in modes] + ["ssh_host_ed25519_key"]), names)
    for path, mode in modes.items():
        t.assertEqual(mode, ["644", "root", "root"], path)
        t.assertEqual(guest.file(path), fixture("a", path.split("/")[-1]), path)

with subtest("/etc/machine-id is the identity's, bound from /var/identity"):
    t.assertEqual(guest.file("/etc/machine-id").strip(), machine_id)
    t.assertTrue(guest.source_of("/etc/machine-id").endswith("[/identity/machine-id]"))
    # PID 1 found it at start: no first boot, nothing to commit.
    guest.fails("sudo journalctl -b --no-pager | grep -F 'Detected first boot'")
    t.assertEqual(
        guest.run("systemctl show -P ConditionResult systemd-machine-id-commit.service").strip(), "no"
    )

with subtest("hostname, resolv.conf and hosts come from the identity by bind mounts"):
    t.assertEqual(guest.run("hostname").strip(), fixture("a", "hostname").strip())
    t.assertEqual(guest.file("/etc/hostname"), fixture("a", "hostname"))
    t.assertEqual(guest.file("/etc/resolv.conf"), fixture("a", "resolv.conf"))
    hosts = guest.file("/etc/hosts")
    t.assertIn("localhost", hosts)
    t.assertTrue(hosts.endswith(fixture("a", "hosts")), hosts)
    t.assertEqual(guest.run("getent hosts cache").split(), ["192.0.2.11", "cache"])
    mounts = guest.run("findmnt -rno TARGET,SOURCE,OPTIONS")
    for target in ["/etc/machine-id", "/etc/hostname", "/etc/resolv.conf", "/etc/hosts"]:
        line = next(line for line in mounts.splitlines() if line.split()[0] == target)
        t.assertIn("ro", line.split()[2].split(","), line)

with subtest("sshd presents the identity's host key"):
    scanned = client.succeed(f"ssh-keyscan -t ed25519 {GUEST_IP} 2>/dev/null").split()
    expected = Path(IVM["host_key_pub"]).read_text().split()
    t.assertEqual(scanned[1:3], expected[0:2])
    fingerprint = client.succeed(f"ssh-keygen -lf {IVM['host_key_pub']}").split()[1]
    t.assertIn(
        fingerprint, client.succeed(f"ssh-keyscan -t ed25519 {GUEST_IP} 2>/dev/null | ssh-keygen -lf -")
    )

with subtest("admin and user log in with the identity's keys; root and passwords do not"):
    t.assertEqual(guest.run("id -un").strip(), "admin")
    t.assertIn("wheel", guest.run("id -nG").split())
    t.assertEqual(guest.run("id -un", user="user").strip(), "user")
    t.assertEqual(guest.run("sudo -n id -u").strip(), "0")
    status, out = client.execute(ssh_command("root", "true") + " 2>&1")
    t.assertNotEqual(status, 0)
    t.assertIn("Permission denied", out)
    status, out = client.execute(
        f"{SSH} -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive"
        f" admin@{GUEST_IP} true 2>&1"
    )
    t.assertNotEqual(status, 0)
    # The server offers public keys only.
    t.assertIn("Permission denied (publickey)", out)

with subtest("tcp_ports are reachable from another machine, other ports are not"):
    guest.listen(9000)
    guest.listen(9001)
    t.assertIn("9000", fixture("a", "tcp_ports").split())
    t.assertTrue(guest.reachable(9000))
    t.assertFalse(guest.reachable(9001))
    # The listener works; the firewall is what stops the client.
    t.assertEqual(guest.run("timeout 5 bash -c 'cat < /dev/tcp/127.0.0.1/9001'").strip(), "open")

with subtest("udp_ports are in the firewall's UDP set"):
    udp = guest.run("sudo nft list set inet nixos-fw ivm_udp_ports")
    for port in fixture("a", "udp_ports").split():
        t.assertIn(port, udp)

guest.poweroff()
