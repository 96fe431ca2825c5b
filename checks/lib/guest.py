# Boots a built ivm image the way ivm runs it, and reaches it the way a user does.
#
# Prepended to every test script after the IVM constants (checks/lib/guest.nix). The guest is the
# real image (no test backdoor): UEFI (OVMF), the image behind a throwaway qcow2 overlay attached
# read-only (pattern of nixos/tests/appliance-repart-image.nix), a blank qcow2 var disk with serial
# `var` and a raw identity disk with serial `identity`, started through create_machine() as
# nixos/tests/boot.nix starts images. Commands run over SSH from the `client` node, as `admin`
# (sudo without password) or `user`, with the fixture key and the fixture host key pinned.
import shlex
import subprocess
import tempfile
from pathlib import Path

GUEST_IP: str = IVM["guest_ip"]
SSH = (
    "ssh -i /etc/ivm-test/id_ed25519 -o UserKnownHostsFile=/etc/ivm-test/known_hosts"
    " -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10"
)
BOOT_TIMEOUT = 900


def ssh_command(user: str, command: str) -> str:
    return f"{SSH} {user}@{GUEST_IP} -- {shlex.quote(command)}"


def qemu_img(*args: str) -> None:
    subprocess.run([IVM["qemu_img"], *args], check=True, stdout=subprocess.DEVNULL)


def image_file(image_dir: str) -> str:
    """The one qcow2 in an image package's output, as ivm finds it."""
    found = sorted(Path(image_dir).glob("*.qcow2"))
    assert len(found) == 1, f"{image_dir} should hold exactly one qcow2, holds {found}"
    return str(found[0])


def fixture(variant: str, name: str) -> str:
    return Path(IVM["identity"][variant]["dir"], name).read_text()


def start_client() -> None:
    client.start()
    client.wait_for_unit("dnsmasq.service")


class Guest:
    """One VM: its disks live across boots; each boot may change the image or the identity disk."""

    def __init__(self, image: str, identity: str, var_disk: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ivm-guest-"))
        self.image = image
        self.identity = identity
        self.var_disk = var_disk or self.dir / "var.qcow2"
        if var_disk is None:
            # Blank and sparse, as `ivm create` makes it; the guest formats it.
            qemu_img("create", "-q", "-f", "qcow2", str(self.var_disk), "4G")
        self.nvram = self.dir / "OVMF_VARS.fd"
        self.nvram.write_bytes(Path(IVM["ovmf_vars"]).read_bytes())
        self.machine: QemuMachine | None = None
        self.boots = 0
        self.boot_time = 0

    def start_command(self) -> str:
        overlay = self.dir / f"boot-{self.boots}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", image_file(self.image), str(overlay))
        return " ".join(
            [
                IVM["qemu"],
                "-machine q35,accel=kvm:tcg -cpu max -m 1024 -smp 2",
                f"-drive if=pflash,format=raw,unit=0,readonly=on,file={IVM['ovmf_code']}",
                f"-drive if=pflash,format=raw,unit=1,file={self.nvram}",
                f"-drive if=none,id=boot,format=qcow2,readonly=on,file={overlay}",
                "-device virtio-blk-pci,drive=boot,bootindex=0",
                f"-drive if=none,id=var,format=qcow2,file={self.var_disk}",
                "-device virtio-blk-pci,drive=var,serial=var",
                f"-drive if=none,id=identity,format=raw,readonly=on,file={self.identity}",
                "-device virtio-blk-pci,drive=identity,serial=identity",
                f"-device virtio-net-pci,netdev=net0,mac={IVM['guest_mac']}",
                '-netdev vde,id=net0,sock="$QEMU_VDE_SOCKET_1"',
            ]
        )

    def boot(self, image: str | None = None, identity: str | None = None) -> None:
        """Power on (with another image or identity disk if given) and wait until SSH answers."""
        self.image = image or self.image
        self.identity = identity or self.identity
        self.boots += 1
        self.machine = create_machine(self.start_command(), name=f"guest{self.boots}")
        self.machine.start()
        client.wait_until_succeeds(ssh_command("admin", "true"), timeout=BOOT_TIMEOUT)
        # Seconds since the epoch when the kernel started, on the guest's clock.
        self.boot_time = int(self.run("echo $(( $(date +%s) - $(cut -d. -f1 /proc/uptime) ))"))

    def poweroff(self) -> None:
        assert self.machine is not None
        # The connection drops as the guest goes down; its status says nothing.
        client.execute(ssh_command("admin", "sudo systemctl poweroff"))
        self.machine.wait_for_shutdown()
        self.machine = None

    def reboot(self) -> None:
        """A power cycle with the same disks (QEMU runs with -no-reboot, so a reboot ends it)."""
        self.poweroff()
        self.boot()

    def run(self, command: str, user: str = "admin") -> str:
        """Run a shell command in the guest; fail the test unless it succeeds; return stdout."""
        return client.succeed(ssh_command(user, command))

    def execute(self, command: str, user: str = "admin") -> tuple[int, str]:
        """Run a shell command in the guest; return its status and its output (stderr too)."""
        return client.execute(ssh_command(user, f"{command} 2>&1"))

    def fails(self, command: str, user: str = "admin") -> str:
        """Run a command that must fail in the guest; return its output (stderr too)."""
        status, out = self.execute(command, user)
        t.assertNotEqual(status, 0, f"{command!r} succeeded in the guest:\n{out}")
        return out

    def file(self, path: str) -> str:
        return self.run(f"cat {shlex.quote(path)}")

    def source_of(self, path: str) -> str:
        """What is mounted on a path, as findmnt shows it: device[/path inside it]."""
        return self.run(f"findmnt -no SOURCE --target {shlex.quote(path)}").strip()

    def var_created(self) -> int:
        """When the /var file system was made (mkfs), in seconds since the epoch."""
        return int(
            self.run(
                'date -d "$(sudo tune2fs -l "$(findmnt -no SOURCE /var)"'
                " | sed -n 's/^Filesystem created: *//p')\" +%s"
            )
        )

    def listen(self, port: int) -> None:
        """Start a TCP listener in the guest that answers `open` (a transient unit, gone at boot)."""
        self.run(
            f"sudo systemd-run --unit=ivm-probe-{port} $(type -P systemd-socket-activate)"
            f" --listen={port} --accept --inetd $(type -P echo) open"
        )
        self.run(f"timeout 60 sh -c 'until ss -Hltn sport = :{port} | grep -q .; do sleep 1; done'")

    def reachable(self, port: int) -> bool:
        """Whether the client gets `open` from a guest port within a few seconds."""
        status, out = client.execute(f"timeout 8 bash -c 'cat < /dev/tcp/{GUEST_IP}/{port}'")
        return status == 0 and out.strip() == "open"
