"""ivm run as root in a project a throwaway unprivileged user owns: Nix runs as that user (a fake nix
fails, as Nix does, when root works on another user's repository), generated identity files belong
to that user, and the Justfile refuses to be run as root there rather than reach the Nix failure."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ivm.privilege import Account, check_uri_for_user, hand_over, make_dirs, owner_account
from ivm.run import run
from tests.conftest import RunCli, machine_entry, require_host_changes
from tests.unit.test_cli import one_error_line

USER_CHANGE = "a throwaway system user and group, removed afterwards"
MAKES_A_USER = pytest.mark.host_changes(what=USER_CHANGE)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Nix >= 2.20.5 refuses a git repository its user does not own (the check git has since
# CVE-2022-24765); this stand-in applies that check to the flake it is given, then pretends.
FAKE_NIX = r"""#!/bin/sh
echo "$(id -u) $(id -g) $HOME xdg=${{XDG_CACHE_HOME-}} $*" >> {log}
for a; do case $a in *'#'*) ref=${{a%%#*}}; break ;; esac; done
last=$a
[ "$ref" = . ] && ref=$PWD
if [ "$(id -u)" != "$(stat -c %u "$ref")" ]; then
  echo "error: repository path '$ref' is not owned by current user" >&2
  exit 1
fi
case $1 in
  eval) case "$*" in
          *'#lib.machines'*) printf web1 ;;
          *) echo /nix/store/00000000000000000000000000000000-image ;;
        esac ;;
  *) case $last in
       *'#ivm') echo {tool} ;;
       *'#machines-json') echo {machines} ;;
       *) echo {image} ;;
     esac ;;
esac
"""


# The tool as the owner may run it: this venv's interpreter may sit in root's home, so a system
# Python of the same version runs it, with this environment's packages.
OWNERS_IVM = """#!/bin/sh
exec {python} -c 'import site, sys; site.addsitedir(sys.argv.pop(1)); sys.argv[0] = "ivm"; \\
from ivm.cli import main; main()' {site} "$@"
"""


def system_python() -> str | None:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@dataclass
class Lab:
    owner: pwd.struct_passwd
    project: Path
    path: str  # PATH with the fake nix first
    log: Path
    image_dir: Path
    machines: Path
    owners_ivm: Path  # the tool, runnable by the owner
    owners_home: Path

    def as_owner(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A command as the project's owner (setpriv drops this root test to that user)."""
        if not self.owners_ivm.is_file():
            pytest.skip(f"no system Python {sys.version_info[:2]} for the owner to run the tool with")
        drop = ["setpriv", f"--reuid={self.owner.pw_uid}", f"--regid={self.owner.pw_gid}", "--init-groups"]
        full = {"PATH": self.path, "HOME": str(self.owners_home), **env}
        return subprocess.run([*drop, *argv], cwd=self.project, env=full, capture_output=True, text=True)

    def ivm(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The ivm CLI as root (this test process), in the project."""
        argv = [str(BIN / "ivm"), "--machines", str(self.machines), *args]
        full = {"PATH": self.path, "HOME": "/root", **(env or {})}
        return subprocess.run(argv, cwd=self.project, env=full, capture_output=True, text=True)

    def nix_calls(self) -> list[list[str]]:
        return [line.split(" ", 4) for line in self.log.read_text().splitlines()]


@contextmanager
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A new unprivileged user (and its group), removed afterwards; skips where that is impossible."""
    require_host_changes(USER_CHANGE)
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd (a throwaway user owns the project)")
    name = f"ivmt{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", f"/nonexistent/{name}", "--user-group", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def owner() -> Iterator[pwd.struct_passwd]:
    with throwaway_user() as user:
        yield user


@pytest.fixture
def lab(owner: pwd.struct_passwd) -> Iterator[Lab]:
    # Outside pytest's root-only tmp_path, so the owner can reach it.
    top = Path(tempfile.mkdtemp(prefix="ivm-privilege-", dir="/tmp"))
    try:
        top.chmod(0o755)
        project = top / "project"
        (project / "machines").mkdir(parents=True)
        (project / "flake.nix").write_text("{ outputs = _: { }; }\n")
        shutil.copy(REPO / "Justfile", project / "Justfile")
        for p in (project, *project.rglob("*")):
            os.chown(p, owner.pw_uid, owner.pw_gid)
        image_dir = top / "image"
        image_dir.mkdir()
        raw = image_dir / "ivm.raw"
        with raw.open("wb") as f:
            f.truncate(8 * 1024 * 1024)
        subprocess.run(["/usr/sbin/sfdisk", "-q", str(raw)], input=b"label: gpt\n,,U\n", check=True)
        machines = top / "machines.json"
        machines.write_text(json.dumps({"version": 1, "machines": {"web1": machine_entry()}}))
        tool = top / "tool"
        (tool / "bin").mkdir(parents=True)
        python = system_python()
        if python is not None:
            site_dir = sysconfig.get_paths()["purelib"]
            (tool / "bin" / "ivm").write_text(OWNERS_IVM.format(python=python, site=site_dir))
            (tool / "bin" / "ivm").chmod(0o755)
        home = top / "home"
        home.mkdir()
        os.chown(home, owner.pw_uid, owner.pw_gid)
        log = top / "nix.log"
        log.touch(mode=0o666)
        log.chmod(0o666)  # the fake nix appends as whichever user it runs as
        fake = top / "bin" / "nix"
        fake.parent.mkdir()
        fake.write_text(FAKE_NIX.format(log=log, tool=tool, machines=machines, image=image_dir))
        fake.chmod(0o755)
        path = f"{fake.parent}:{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"
        yield Lab(owner, project, path, log, image_dir, machines, tool / "bin" / "ivm", home)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@MAKES_A_USER
def test_the_fake_nix_fails_like_nix_as_root_on_the_owners_tree(lab: Lab) -> None:
    r = subprocess.run(
        ["nix", "build", "--no-link", "--print-out-paths", f"{lab.project}#image-web1"],
        env={"PATH": lab.path},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert f"repository path '{lab.project}' is not owned by current user" in r.stderr


@pytest.mark.parametrize(
    "how",
    [
        {},  # su, setpriv, a root shell: nothing says who called
        {"SUDO_USER": "root", "SUDO_UID": "0"},  # sudo from another account: the tree's owner counts
        {"XDG_CACHE_HOME": "/root/.cache"},  # root's own per-user folders are not handed to Nix
    ],
    ids=["plain-root", "sudo", "root-xdg"],
)
@MAKES_A_USER
def test_nix_runs_as_the_projects_owner(lab: Lab, how: dict[str, str]) -> None:
    r = lab.ivm("build", "web1", env=how)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{lab.image_dir / 'ivm.raw'}\tbase-")
    ((uid, gid, home, xdg, args),) = lab.nix_calls()
    assert (int(uid), int(gid), home, xdg) == (lab.owner.pw_uid, lab.owner.pw_gid, lab.owner.pw_dir, "xdg=")
    assert args == f"build --no-link --print-out-paths {lab.project}#image-web1"


@MAKES_A_USER
def test_drift_evaluation_runs_as_the_owner(lab: Lab) -> None:
    r = lab.ivm("--connect", "test:///default", "status", "--json")
    assert r.returncode in (0, 1), r.stderr
    assert "not owned by current user" not in r.stderr
    assert lab.nix_calls(), "status evaluates the flake for drift"
    assert {int(c[0]) for c in lab.nix_calls()} == {lab.owner.pw_uid}


@MAKES_A_USER
def test_generated_identity_belongs_to_the_owner(lab: Lab) -> None:
    # create generates the identity first; the test driver then stops it at the base upload
    r = lab.ivm("--connect", "test:///default", "create", "web1")
    assert r.returncode == 1 and "virStorageVolUpload" in r.stderr, r.stderr
    machine = lab.project / "machines" / "web1"
    made = {p.name: p.lstat() for p in machine.iterdir()}
    assert sorted(made) == [
        "hostname",
        "machine-id",
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]
    for p in (machine, *machine.iterdir()):
        info = p.lstat()
        assert (info.st_uid, info.st_gid) == (lab.owner.pw_uid, lab.owner.pw_gid), p
    assert stat.S_IMODE(made["ssh_host_ed25519_key"].st_mode) == 0o600
    assert stat.S_IMODE(made["ssh_host_ed25519_key.pub"].st_mode) == 0o644
    assert stat.S_IMODE(made["machine-id"].st_mode) == 0o644
    # nothing root-owned is left anywhere in the tree (no temporary files either)
    assert [p for p in lab.project.rglob("*") if p.lstat().st_uid == 0] == []


@MAKES_A_USER
def test_an_owner_without_an_account_is_refused_in_one_line(lab: Lab) -> None:
    stranger = 3_000_000_000 + secrets.randbelow(1_000_000)
    os.chown(lab.project, stranger, stranger)
    r = lab.ivm("build", "web1")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ivm: error: "), r.stderr
    assert f"uid {stranger}, which has no account here" in lines[0] and "run ivm as" in lines[0]
    assert lab.nix_calls() == []


@MAKES_A_USER
def test_as_the_owner_nothing_changes(lab: Lab) -> None:
    """The recommended set-up: ivm run by the project's owner."""
    r = lab.as_owner(
        str(lab.owners_ivm), "--machines", str(lab.machines), "--connect", "test:///default", "xml", "web1"
    )
    assert r.returncode == 0, r.stderr
    assert {int(c[0]) for c in lab.nix_calls()} == {lab.owner.pw_uid}
    assert all(p.lstat().st_uid == lab.owner.pw_uid for p in lab.project.rglob("*"))


@pytest.mark.parametrize(
    "recipe", [["build", "web1"], ["up", "web1"], ["build-libvirt-xml"], ["image-info", "web1"]]
)
@MAKES_A_USER
def test_just_as_root_in_the_owners_tree_says_how_to_run_it(lab: Lab, recipe: list[str]) -> None:
    just = BIN / "just"
    if not just.is_file():
        pytest.skip("`just` is not installed (pip install rust-just)")
    r = subprocess.run(
        [str(just), *recipe], cwd=lab.project, env={"PATH": lab.path}, capture_output=True, text=True
    )
    assert r.returncode != 0
    assert "not owned by current user" not in r.stderr
    assert f"just: run just as {lab.owner.pw_name}, who owns this project, not as root" in r.stderr
    assert lab.nix_calls() == []


@MAKES_A_USER
def test_just_as_the_owner_builds_and_writes_as_the_owner(lab: Lab) -> None:
    """`just build-libvirt-xml` with the default SUDO= runs Nix, the tool and the redirect as the
    owner: the XML lands in libvirt/, and printing it generates no identity files."""
    just = BIN / "just"
    if not just.is_file():
        pytest.skip("`just` is not installed (pip install rust-just)")
    r = lab.as_owner(str(just), "build-libvirt-xml", LIBVIRT_URI="test:///default")
    assert r.returncode == 0, r.stderr
    assert "<name>web1</name>" in (lab.project / "libvirt" / "web1.xml").read_text()
    refs = [next(a for a in c[4].split() if "#" in a) for c in lab.nix_calls()]
    assert refs == [".#lib.machines", ".#ivm", ".#machines-json", f"{lab.project}#image-web1"]
    assert {int(c[0]) for c in lab.nix_calls()} == {lab.owner.pw_uid}
    assert all(p.lstat().st_uid == lab.owner.pw_uid for p in lab.project.rglob("*"))
    assert not (lab.project / "machines" / "web1" / "ssh_host_ed25519_key").exists()


def test_as_non_root_nothing_is_handed_over(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        assert owner_account(Path("/")) is None  # root's own tree: Nix may run as root
    target = tmp_path / "a" / "b"
    make_dirs(target)
    f = target / "f"
    f.write_text("x")
    hand_over(f, target)  # same owner: nothing to do, no error
    assert target.is_dir() and f.stat().st_uid == os.geteuid()


@MAKES_A_USER
def test_nix_missing_from_roots_path_is_found_in_the_owners_profile(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sudo's secure_path has no Nix on most distributions; the owner's profile has it."""
    profile = lab.owners_home / ".nix-profile" / "bin"
    profile.mkdir(parents=True)
    shutil.copy(Path(lab.path.split(":")[0]) / "nix", profile / "nix")
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    account = Account(lab.owner.pw_name, lab.owner.pw_uid, lab.owner.pw_gid, str(lab.owners_home), ())
    out = run(["nix", "eval", "--raw", f"{lab.project}#image-web1.outPath"], package="Nix", as_user=account)
    assert out.startswith("/nix/store/")
    ((uid, _, home, _, _),) = lab.nix_calls()
    assert (int(uid), home) == (lab.owner.pw_uid, str(lab.owners_home))


def test_session_uri_as_root_is_refused_before_connecting(
    run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ivm.privilege.os.geteuid", lambda: 0)
    opened: list[str] = []
    monkeypatch.setattr("ivm.hypervisor.connection.libvirt.open", opened.append)
    assert "under /root" in run_cli("status", uri="qemu:///session").stdout  # each row says why
    for args in (("create", "web1"), ("destroy", "web1"), ("pool", "remove")):
        r = run_cli(*args, uri="qemu:///session")
        line = one_error_line(r.stderr)
        assert r.exit_code == 2 and "as root would keep the VMs' disks under /root" in line, line
        assert "qemu:///system" in line
    assert opened == []


def test_session_uri_as_a_user_and_system_as_root_pass() -> None:
    check_uri_for_user("qemu:///session", euid=1000)
    check_uri_for_user("qemu:///system", euid=0)
    check_uri_for_user("qemu+ssh://hv2/session", euid=0)  # a remote user's daemon: not our /root
