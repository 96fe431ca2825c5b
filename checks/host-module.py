# services.ivm brings web1 up at boot; a second run of the unit changes nothing.
PROJECT = "/var/lib/ivm/project"

with subtest("libvirtd runs and the ivm-fleet unit succeeded at boot"):
    host.wait_for_unit("libvirtd.service")
    host.wait_for_unit("ivm-fleet.service")
    t.assertEqual(host.succeed("systemctl show -P Result ivm-fleet.service").strip(), "success")
    # The tool picks KVM by access to /dev/kvm: the unit's device policy must let it see the device.
    t.assertIn("/dev/kvm rw", host.succeed("systemctl show -P DeviceAllow ivm-fleet.service"))
    host.succeed("test -d /run/ivm-fleet")  # the locks' directory stays while the unit is inactive

with subtest("the pool is defined, running and autostarted"):
    info = host.succeed("virsh pool-info ivm")
    t.assertRegex(info, r"State:\s+running")
    t.assertRegex(info, r"Autostart:\s+yes")

with subtest("the network web1 names is active and autostarted"):
    info = host.succeed("virsh net-info default")
    t.assertRegex(info, r"Active:\s+yes")
    t.assertRegex(info, r"Autostart:\s+yes")

with subtest("web1 is defined and running on its disks in the pool"):
    t.assertIn("web1", host.succeed("virsh list --all --name").split())
    t.assertEqual(host.succeed("virsh domstate web1").strip(), "running")
    volumes = host.succeed("virsh vol-list ivm")
    for volume in ["web1-boot.qcow2", "web1-var.qcow2", "web1-identity.img", "base-"]:
        t.assertIn(volume, volumes)

with subtest("the identity was made in the project folder, the private key the ivm user's alone"):
    key = f"{PROJECT}/machines/web1/ssh_host_ed25519_key"
    t.assertEqual(host.succeed(f"stat -c '%U %a' {key}").strip(), "ivm 600")

with subtest("run again, the unit finds nothing to do and restarts nothing"):
    host.succeed("systemctl restart ivm-fleet.service")
    t.assertEqual(host.succeed("systemctl show -P Result ivm-fleet.service").strip(), "success")
    log = host.succeed("journalctl -b -u ivm-fleet.service -o cat --no-pager")
    t.assertIn("web1: no changes", log)
    t.assertEqual(host.succeed("virsh domstate web1").strip(), "running")

with subtest("ivm-host runs the tool as the unit does, for root only"):
    listing = host.succeed("ivm-host list")
    t.assertRegex(listing, r"web1\s.*running")
    host.fail("runuser -u nobody -- ivm-host list")
