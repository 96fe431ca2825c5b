"""SSH host certificates: where the CA may live, signing with ssh-keygen, when to sign again, and the
@cert-authority line that ssh-config and ssh trust instead of a key per VM."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ivm.errors import ToolError, UsageError
from ivm.identity.host_ca import HostCa, certify, load_host_ca
from ivm.identity.rules import Name
from ivm.identity.source import generate_missing, load_identity
from ivm.identity.sshcert import RENEW_SECONDS, Certificate, parse_certificate, principals, resign_reason
from ivm.identity.sshkey import parse_public_key
from ivm.ops import provision
from ivm.ops import ssh_config as ssh_config_ops
from ivm.ops.plan import Desired, Observed, plan_vm
from ivm.ops.ssh import Target, known_hosts
from ivm.volumes import vm_volumes
from tests.conftest import Project, RunCli
from tests.unit.test_cli import one_error_line
from tests.unit.test_ssh_config import ssh_g


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", str(path)], check=True)
    return path


@pytest.fixture
def ca_path(tmp_path: Path) -> Path:
    """A throwaway CA outside the project (tests/conftest.py puts the project in tmp_path/project)."""
    home = tmp_path / "ca-home"
    home.mkdir(mode=0o700)
    return keygen(home / "ivm_host_ca")


@pytest.fixture
def ca(ca_path: Path, project: Project) -> HostCa:
    return load_host_ca(ca_path, project.root, signing=True)


@pytest.fixture
def web1(project: Project) -> Path:
    directory = project.machine_dir("web1")
    generate_missing(directory, "web1")
    return directory


def cert_of(directory: Path) -> Certificate:
    return parse_certificate((directory / Name.HOST_CERT).read_text())


# Signing


def test_create_signs_the_host_key_and_ssh_keygen_reads_the_principals(ca: HostCa, web1: Path) -> None:
    assert certify(ca, web1, "web1", "web1") == "no host certificate yet"
    cert = web1 / Name.HOST_CERT
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True)
    assert "host certificate" in shown.stdout and 'Key ID: "web1"' in shown.stdout
    listed = shown.stdout.split("Principals:")[1].split("Critical Options:")[0].split()
    assert sorted(listed) == ["ivm-web1", "web1"]
    assert cert.stat().st_mode & 0o777 == 0o644
    identity = load_identity(web1, generate=False)  # the identity carries it, valid
    assert identity.host_certificate == cert_of(web1)
    assert not list(web1.glob(".keygen-*"))


def test_a_good_certificate_is_kept_so_an_unchanged_vm_stays_unchanged(ca: HostCa, web1: Path) -> None:
    certify(ca, web1, "web1", "web1")
    before = (web1 / Name.HOST_CERT).read_bytes()
    assert certify(ca, web1, "web1", "web1") is None
    assert (web1 / Name.HOST_CERT).read_bytes() == before


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("hostname", "it names other principals"),
        ("host key", "the host key changed"),
        ("ca", "it was signed by another CA"),
        ("garbage", "no host certificate yet"),
    ],
)
def test_signed_again_when_it_no_longer_fits(
    ca: HostCa, web1: Path, tmp_path: Path, project: Project, change: str, why: str
) -> None:
    certify(ca, web1, "web1", "web1")
    hostname = "web1"
    if change == "hostname":
        hostname = "www"
    elif change == "host key":
        for name in (Name.HOST_KEY, Name.HOST_KEY_PUB):
            (web1 / name).unlink()
        generate_missing(web1, "web1")
    elif change == "ca":
        other = tmp_path / "other-ca"
        other.mkdir(mode=0o700)
        ca = load_host_ca(keygen(other / "ca"), project.root, signing=True)
    else:
        (web1 / Name.HOST_CERT).write_text("not a certificate\n")
    assert certify(ca, web1, "web1", hostname) == why
    cert = cert_of(web1)
    assert cert.ca_blob == ca.public.blob and sorted(cert.principals) == sorted(principals("web1", hostname))
    load_identity(web1, generate=False)


def test_a_stale_certificate_without_a_ca_is_refused_with_a_hint(ca: HostCa, web1: Path) -> None:
    certify(ca, web1, "web1", "web1")
    for name in (Name.HOST_KEY, Name.HOST_KEY_PUB):
        (web1 / name).unlink()
    generate_missing(web1, "web1")
    with pytest.raises(UsageError) as e:
        load_identity(web1, generate=False)
    assert "certifies another host key" in e.value.message and "--host-ca" in str(e.value.hint)


# When to sign again (pure)

HOST = parse_public_key(
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIg1El8h+IR/7iF8FBigHB867NLB9MuiAxwmrBL1GJmQ"
).blob
CA = b"\x00\x00\x00\x0bssh-ed25519" + b"\x00\x00\x00\x20" + b"c" * 32
NOW = 1_800_000_000
GOOD = Certificate(HOST, 0, 2, "web1", ("web1", "ivm-web1"), NOW - 60, NOW + 200 * 86400, CA)


@pytest.mark.parametrize(
    ("cert", "why"),
    [
        (GOOD, None),
        (None, "no host certificate yet"),
        (replace(GOOD, key_blob=CA), "the host key changed"),
        (replace(GOOD, ca_blob=HOST), "it was signed by another CA"),
        (replace(GOOD, principals=("web1",)), "it names other principals"),
        (replace(GOOD, key_id="web2"), "it names other principals"),
        (replace(GOOD, valid_after=NOW + 600), "it is not valid yet"),
        (replace(GOOD, valid_before=NOW + RENEW_SECONDS - 1), "it expires 2027-"),
        (replace(GOOD, valid_before=NOW - 1), "it expired 2027-"),
        (replace(GOOD, valid_before=NOW + RENEW_SECONDS + 1), None),
        (replace(GOOD, valid_before=2**64 - 1), None),
    ],
)
def test_resign_reason(cert: Certificate | None, why: str | None) -> None:
    got = resign_reason(cert, host_key_blob=HOST, ca_blob=CA, name="web1", hostname="web1", now=NOW)
    assert got == why if why is None or not why.endswith("-") else str(got).startswith(why)


def test_plan_lists_a_certificate_due_as_an_identity_change() -> None:
    vols = vm_volumes("web1")
    observed = Observed(
        "web1", frozenset(vols.all()), "b" * 64, "d" * 32, None, False, False, frozenset({"b" * 64})
    )
    same = Desired("web1", "test:///default", "b" * 64, "d" * 32, None)
    assert "identity" not in plan_vm(same, observed).actions
    due = plan_vm(replace(same, resign="it expires soon"), observed)
    assert "identity" in due.actions and "host certificate to sign again: it expires soon" in due.details


# Where the CA may live


def test_a_ca_inside_the_project_is_refused(project: Project) -> None:
    inside = project.root / "secrets"
    inside.mkdir(mode=0o700)
    keygen(inside / "ca")
    with pytest.raises(UsageError) as e:
        load_host_ca(inside / "ca", project.root, signing=True)
    assert "inside the project" in e.value.message and "outside the project" in str(e.value.hint)


def test_a_symlink_out_of_the_project_into_it_is_refused(project: Project, tmp_path: Path) -> None:
    inside = project.root / "ca"
    keygen(inside)
    inside.chmod(0o600)
    link = tmp_path / "ca-link"
    link.symlink_to(inside)
    with pytest.raises(UsageError, match="inside the project"):
        load_host_ca(link, project.root, signing=True)


def test_a_ca_in_the_nix_store_is_refused(project: Project) -> None:
    with pytest.raises(UsageError, match="inside the Nix store"):
        load_host_ca(Path("/nix/store/0000-ca/ca"), project.root, signing=True)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_ca_readable_by_others_is_refused(ca_path: Path, project: Project, mode: int) -> None:
    ca_path.chmod(mode)
    with pytest.raises(UsageError) as e:
        load_host_ca(ca_path, project.root, signing=True)
    assert "readable by other users" in e.value.message and e.value.hint == f"run: chmod 600 {ca_path}"


def test_a_missing_ca_or_public_half_is_refused(ca_path: Path, project: Project) -> None:
    Path(f"{ca_path}.pub").unlink()
    with pytest.raises(UsageError, match=r"public key .*\.pub") as e:
        load_host_ca(ca_path, project.root, signing=True)
    assert "ssh-keygen -y -f" in str(e.value.hint)
    ca_path.unlink()
    with pytest.raises(UsageError, match="does not exist"):
        load_host_ca(ca_path, project.root, signing=True)


def test_a_public_half_of_another_key_is_found_when_signing(
    ca_path: Path, project: Project, web1: Path
) -> None:
    other = keygen(ca_path.parent / "other")
    shutil.copyfile(f"{other}.pub", f"{ca_path}.pub")
    with pytest.raises(UsageError, match="is not the public half"):
        certify(load_host_ca(ca_path, project.root, signing=True), web1, "web1", "web1")
    assert not (web1 / Name.HOST_CERT).exists()


def test_a_ca_with_a_passphrase_fails_without_waiting(ca_path: Path, project: Project, web1: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret", "-P", "", "-f", str(ca_path)], check=True)
    with pytest.raises(ToolError) as e:
        certify(load_host_ca(ca_path, project.root, signing=True), web1, "web1", "web1")
    assert "passphrase" in str(e.value.hint)
    assert not (web1 / Name.HOST_CERT).exists()


# Through the CLI


@pytest.fixture
def stop_before_the_image(monkeypatch: pytest.MonkeyPatch) -> str:
    """create stops where it would first need the image: the test driver cannot take uploads, and
    signing happens before (with the identity files, before anything on the hypervisor changes)."""
    said = "stopped before the image"

    def stop(*_args: object) -> None:
        raise ToolError(said)

    monkeypatch.setattr(provision, "resolve_image", stop)
    return said


def test_cli_create_signs_once_and_never_logs_the_ca_key(
    run_cli: RunCli, project: Project, ca_path: Path, stop_before_the_image: str
) -> None:
    r = run_cli("--debug", "create", "web1", "--host-ca", str(ca_path))
    assert stop_before_the_image in r.stderr
    assert "signed its host key with ivm_host_ca (no host certificate yet)" in r.stderr
    secret = "".join(ca_path.read_text().splitlines()[1:-1])
    assert secret[:40] not in r.output and "PRIVATE KEY" not in r.output
    cert = project.machine_dir("web1") / Name.HOST_CERT
    before = cert.read_bytes()
    r = run_cli("create", "web1", "--host-ca", str(ca_path))
    assert stop_before_the_image in r.stderr and "signed" not in r.stderr
    assert cert.read_bytes() == before


def test_cli_takes_the_ca_from_ivm_host_ca(
    run_cli: RunCli,
    project: Project,
    ca_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop_before_the_image: str,
) -> None:
    monkeypatch.setenv("IVM_HOST_CA", str(ca_path))
    assert stop_before_the_image in run_cli("create", "web1").stderr
    assert cert_of(project.machine_dir("web1")).key_id == "web1"


def test_cli_refuses_a_ca_in_the_project_before_anything(
    run_cli: RunCli, project: Project, stop_before_the_image: str
) -> None:
    keygen(project.root / "ca").chmod(0o600)
    r = run_cli("create", "web1", "--host-ca", str(project.root / "ca"))
    line = one_error_line(r.stderr)
    assert r.exit_code == 2 and "inside the project" in line
    assert not (project.machine_dir("web1") / Name.HOST_CERT).exists()


# ssh-config and ssh


def targets(ca: HostCa, web1: Path) -> tuple[Target, Target]:
    certify(ca, web1, "web1", "web1")
    identity = load_identity(web1, generate=False)
    signed = Target(
        "web1",
        "qemu:///system",
        "ivm-web1",
        "192.0.2.5",
        identity.host_public_key,
        None,
        identity.host_certificate,
    )
    plain = Target("web2", "qemu:///system", "ivm-web2", "192.0.2.6", identity.host_public_key)
    return signed, plain


def test_ssh_config_trusts_the_ca_once_instead_of_each_key(ca: HostCa, web1: Path, tmp_path: Path) -> None:
    signed, plain = targets(ca, web1)
    out = tmp_path / "ivm.conf"
    config, keys = ssh_config_ops.render(
        [signed, plain], [], "admin", ssh_config_ops.known_hosts_for(out), ca
    )
    ssh_config_ops.write_config(out, config, keys)
    lines = (tmp_path / "ivm.conf.known_hosts").read_text().splitlines()
    ca_line = f"@cert-authority ivm-web1 {' '.join(ca.public.line().split()[:2])}"
    assert lines == [ca_line, f"ivm-web2 {' '.join(plain.host_public_key.split()[:2])}"]
    seen = ssh_g(out, "web1")
    assert seen["userknownhostsfile"] == f"{out}.known_hosts" and seen["hostkeyalias"] == "ivm-web1"
    # OpenSSH's own reader of known_hosts finds the CA line for the alias ssh checks the key under.
    found = subprocess.run(
        ["ssh-keygen", "-F", "ivm-web1", "-f", f"{out}.known_hosts"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0 and "@cert-authority ivm-web1" in found.stdout


def test_without_a_ca_every_key_is_pinned_as_before(ca: HostCa, web1: Path) -> None:
    signed, plain = targets(ca, web1)
    assert not known_hosts([signed, plain], None).startswith("@cert-authority")
    assert len(known_hosts([signed, plain], None).splitlines()) == 2


def test_an_expired_or_foreign_certificate_falls_back_to_the_pinned_key(
    ca: HostCa, web1: Path, tmp_path: Path, project: Project
) -> None:
    signed, _ = targets(ca, web1)
    assert signed.certificate is not None
    expired = replace(signed, certificate=replace(signed.certificate, valid_before=int(time.time()) - 1))
    assert known_hosts([expired], ca).startswith("ivm-web1 ssh-ed25519 ")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    foreign = load_host_ca(keygen(other / "ca"), project.root, signing=True)
    assert known_hosts([signed], foreign).startswith("ivm-web1 ssh-ed25519 ")
