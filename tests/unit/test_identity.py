"""Identity files: every rule, generation of what may be generated, and the identity disk."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from ivm.errors import UsageError
from ivm.identity import rules
from ivm.identity.disk import build_identity_disk
from ivm.identity.rules import Name
from ivm.identity.source import generate_missing, load_identity
from ivm.identity.sshkey import parse_private_ed25519, parse_public_key, split_authorized_key

DEBUGFS = "/usr/sbin/debugfs" if Path("/usr/sbin/debugfs").exists() else "debugfs"


def keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "t@x", "-f", str(path)], check=True
    )
    return path


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("key") / "k")


# --- rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0123456789abcdef0123456789abcdef\n", "0123456789abcdef0123456789abcdef"])
def test_machine_id_ok(text: str) -> None:
    rules.check_machine_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0" * 32 + "\n",
        "0123456789ABCDEF0123456789ABCDEF\n",
        "abc\n",
        "0123456789abcdef0123456789abcdef\n\n",
        "g" * 32,
    ],
)
def test_machine_id_bad(text: str) -> None:
    with pytest.raises(ValueError, match="32 lowercase|all zeros"):
        rules.check_machine_id(text)


@pytest.mark.parametrize("text", ["22\n", "22\n80\n443\n", "# ssh\n22\n\n", "65535", "1\n"])
def test_ports_ok(text: str) -> None:
    rules.check_ports(text)


@pytest.mark.parametrize("text", ["0\n", "65536\n", "http\n", "-1\n", "22 80\n", "+22\n", "123456\n"])
def test_ports_bad(text: str) -> None:
    with pytest.raises(ValueError, match="line 1: .* is not a port number"):
        rules.check_ports(text)


def test_hosts_rules() -> None:
    rules.check_hosts("192.0.2.10 db db.example.org # the db\n::1 ip6-localhost\n# c\n\n")
    for bad, msg in [
        ("db 192.0.2.1\n", "not an IP address"),
        ("192.0.2.1\n", "at least one host name"),
        ("192.0.2.1 bad_name!\n", "not a valid host name"),
    ]:
        with pytest.raises(ValueError, match=msg):
            rules.check_hosts(bad)


def test_resolv_conf_rules() -> None:
    rules.check_resolv_conf(
        "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org lan\n"
        "options edns0 ndots:2\n; comment\n"
    )
    for bad, msg in [
        ("nameserver\n", "exactly one address"),
        ("nameserver dns.example\n", "not an IP"),
        ("server 1.1.1.1\n", "unknown keyword"),
        ("search\n", "at least one domain"),
    ]:
        with pytest.raises(ValueError, match=msg):
            rules.check_resolv_conf(bad)


def test_text_rules() -> None:
    assert rules.check_text(b"ok\n") == "ok\n"
    for data, msg in [
        (b"a\r\nb\n", "Windows line endings"),
        (b"a\x1bb\n", "control character"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * (64 * 1024 + 1), "limited to"),
    ]:
        with pytest.raises(ValueError, match=msg):
            rules.check_text(data)


def test_authorized_keys(keypair: Path) -> None:
    pub = Path(f"{keypair}.pub").read_text().strip()
    rules.check_authorized_keys(f"# admins\n{pub}\n\n" + f'from="10.0.0.0/8",no-pty {pub}\n')
    assert split_authorized_key(f'command="echo a b" {pub}') == pub
    body = pub.split()[1]
    for bad, msg in [
        ("ssh-ed25519\n", "not a public key line"),
        (f"ssh-dss {body}\n", "unsupported key type"),
        ("ssh-ed25519 !!!\n", "not valid base64"),
        (f"ssh-rsa {body}\n", "holds a ssh-ed25519"),
        ('no-pty,command="x y"\n', "options but no key"),
    ]:
        with pytest.raises(ValueError, match=msg):
            rules.check_authorized_keys(bad)


def test_private_key_parsing(keypair: Path, tmp_path: Path) -> None:
    public = parse_private_ed25519(keypair.read_text())
    assert public.blob == parse_public_key(Path(f"{keypair}.pub").read_text()).blob
    rsa = keygen(tmp_path / "rsa", "rsa")
    with pytest.raises(ValueError, match="is a ssh-rsa key"):
        parse_private_ed25519(rsa.read_text())
    locked = keygen(tmp_path / "locked", passphrase="secret-pass")
    with pytest.raises(ValueError, match="passphrase"):
        parse_private_ed25519(locked.read_text())
    lines = keypair.read_text().splitlines()
    with pytest.raises(ValueError, match="truncated|bad base64|corrupt"):
        parse_private_ed25519("\n".join([lines[0], lines[1], lines[-1]]))
    with pytest.raises(ValueError, match="not an OpenSSH private key"):
        parse_private_ed25519("hello")
    raw = bytearray(base64.b64decode("".join(lines[1:-1])))
    raw[-40] ^= 0xFF  # flip a byte of the private part
    forged = "\n".join([lines[0], base64.b64encode(bytes(raw)).decode(), lines[-1]])
    with pytest.raises(ValueError, match="is corrupt"):
        parse_private_ed25519(forged)


# --- the machine folder ------------------------------------------------------------------------


def test_generates_missing_identity(tmp_path: Path) -> None:
    d = tmp_path / "web1"
    made = generate_missing(d, "web1")
    assert set(made) == {Name.MACHINE_ID, Name.HOSTNAME, Name.HOST_KEY, Name.HOST_KEY_PUB}
    assert (d / "hostname").read_text() == "web1\n"
    assert (d / Name.HOST_KEY).stat().st_mode & 0o777 == 0o600
    ident = load_identity(d, "web1", generate=False)
    assert len(ident.machine_id) == 32 and ident.hostname == "web1"
    assert generate_missing(d, "web1") == []  # idempotent
    assert "PRIVATE" not in repr(ident)


def test_public_half_derived_when_only_private_key_exists(tmp_path: Path, keypair: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / Name.HOST_KEY).write_bytes(keypair.read_bytes())
    (d / Name.HOST_KEY).chmod(0o600)
    assert Name.HOST_KEY_PUB in generate_missing(d, "m")
    assert load_identity(d, "m").host_public_key.split()[:2] == Path(f"{keypair}.pub").read_text().split()[:2]


def test_never_regenerates_a_key_whose_public_half_exists(tmp_path: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    (d / Name.HOST_KEY).unlink()
    with pytest.raises(UsageError, match="exists but its private key") as e:
        load_identity(d, "m")
    assert "git-ignored" in (e.value.hint or "")


def test_unsafe_files_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    (d / Name.HOST_KEY).chmod(0o644)
    with pytest.raises(UsageError, match=r"readable by group or others \(mode 0644\)") as e:
        load_identity(d, "m")
    assert "chmod 600" in (e.value.hint or "")
    (d / Name.HOST_KEY).chmod(0o600)
    outside = tmp_path / "outside"
    outside.write_text("22\n")
    (d / "tcp_ports").symlink_to(outside)
    with pytest.raises(UsageError, match="symbolic link"):
        load_identity(d, "m")
    (d / "tcp_ports").unlink()
    os.mkfifo(d / "udp_ports")
    with pytest.raises(UsageError, match="not a regular file"):
        load_identity(d, "m")


def test_invalid_file_names_path_and_fix(tmp_path: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    (d / "tcp_ports").write_text("22\nssh\n")
    with pytest.raises(UsageError) as e:
        load_identity(d, "m")
    assert str(d / "tcp_ports") in e.value.message and "line 2" in e.value.message
    assert "one port number per line" in (e.value.hint or "")


def test_mismatched_public_key(tmp_path: Path, keypair: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    (d / Name.HOST_KEY_PUB).write_text(Path(f"{keypair}.pub").read_text())
    with pytest.raises(UsageError, match="does not belong to"):
        load_identity(d, "m")


# --- the identity disk -------------------------------------------------------------------------


def test_identity_disk_holds_files_root_owned_with_fixed_modes(tmp_path: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    (d / "tcp_ports").write_text("22\n80\n")
    out = build_identity_disk(load_identity(d, "m"), tmp_path / "id.img")
    assert out.stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(
        [DEBUGFS, "-R", "ls -l /", str(out)], capture_output=True, text=True, check=True
    ).stdout
    rows = {line.split()[-1]: line.split() for line in listing.splitlines() if line.strip()}
    assert rows["ssh_host_ed25519_key"][1] == "100600"
    assert rows["tcp_ports"][1] == "100644" and rows["machine-id"][1] == "100644"
    assert all(rows[n][3] == "0" and rows[n][4] == "0" for n in ("tcp_ports", "ssh_host_ed25519_key"))
    label = subprocess.run(
        ["/sbin/blkid" if Path("/sbin/blkid").exists() else "blkid", "-o", "value", "-s", "LABEL", str(out)],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert label == "identity"
    cat = subprocess.run([DEBUGFS, "-R", "cat /tcp_ports", str(out)], capture_output=True, text=True).stdout
    assert cat == "22\n80\n"


def test_identity_disk_keeps_its_holes(tmp_path: Path) -> None:
    d = tmp_path / "m"
    generate_missing(d, "m")
    out = build_identity_disk(load_identity(d, "m"), tmp_path / "id.img")
    assert out.stat().st_size == 4 * 1024**2
    assert out.stat().st_blocks * 512 < 1024**2  # a dense copy takes the whole 4 MiB
    fsck = subprocess.run(["/sbin/e2fsck" if Path("/sbin/e2fsck").exists() else "e2fsck", "-fn", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
