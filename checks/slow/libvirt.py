# ivm create, define, start against libvirtd on the `host` node, then SSH into the VM.
import shlex
from pathlib import Path

PROJECT = "/root/project"
IVM_CMD = f"ivm --machines {IVM['machines_json']} --root {PROJECT} --connect qemu:///system"
IDENTITY = IVM["identity"]["a"]["dir"]
HOST_KEY = Path(IVM["host_key_pub"]).read_text().strip()

host.wait_for_unit("libvirtd.service")
host.succeed("virsh net-start default")

with subtest("the identity is in the project folder, as machines/web1/"):
    host.succeed(
        f"mkdir -p {PROJECT}/machines/web1 && cp {IDENTITY}/* {PROJECT}/machines/web1/"
        f" && chmod -R u+w {PROJECT} && chmod 600 {PROJECT}/machines/web1/ssh_host_ed25519_key"
    )

with subtest("ivm create imports the base image and makes the VM's disks"):
    host.succeed(f"{IVM_CMD} create web1 --image {IVM['images']['web1']}")
    volumes = host.succeed("virsh vol-list ivm")
    for volume in ["web1-boot.qcow2", "web1-var.qcow2", "web1-identity.img"]:
        t.assertIn(volume, volumes)
    t.assertIn("base-", volumes)
    # Running it again changes nothing.
    host.succeed(f"{IVM_CMD} create web1 --image {IVM['images']['web1']}")

with subtest("ivm define and start run the VM"):
    host.succeed(f"{IVM_CMD} define web1")
    host.succeed(f"{IVM_CMD} start web1")
    t.assertIn("running", host.succeed("virsh domstate web1"))

with subtest("the VM answers SSH with the identity's host key"):
    host.wait_until_succeeds("virsh domifaddr web1 --source lease | grep -q ipv4", timeout=1800)
    address = host.succeed("virsh domifaddr web1 --source lease | awk '/ipv4/ {print $4}'")
    ip = address.strip().split("/")[0]
    host.succeed(f"echo {shlex.quote(ip + ' ' + HOST_KEY)} > /root/known_hosts")
    ssh = (
        "ssh -i /etc/ivm-test/id_ed25519 -o UserKnownHostsFile=/root/known_hosts"
        f" -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 admin@{ip}"
    )
    host.wait_until_succeeds(f"{ssh} true", timeout=1800)
    machine_id = Path(IDENTITY, "machine-id").read_text().strip()
    t.assertEqual(host.succeed(f"{ssh} cat /etc/machine-id").strip(), machine_id)
    t.assertIn("ro", host.succeed(f"{ssh} findmnt -no OPTIONS /").strip().split(","))

with subtest("ivm stop shuts it down"):
    host.succeed(f"{IVM_CMD} stop web1")
    host.wait_until_succeeds("virsh domstate web1 | grep -q 'shut off'", timeout=600)
