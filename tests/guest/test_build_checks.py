"""The flake's build-time checks, rehearsed here on the texts NixOS evaluates (tests/golden/guest/).

A Nix build runs these checks and fails on them; no Nix build runs here, so each is replayed with
the same tool on the same text: nftables' `nft --check` (networking.nftables.checkRuleset), sshd's
`sshd -G -T` (the sshd module's check-sshd-config), writeShellApplication's `bash -n` + shellcheck
(also on the flake apps' launchers), and the image's raw -> qcow2 conversion (modules/image.nix).
Each difference from the Nix build is mechanical and named where it is made; docs/testing.md lists
which derivation runs which check.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.nix.guest_golden import GOLDEN_DIR, ZERO_HASH

ZEROED = re.escape(ZERO_HASH)


def need(tool: str, package: str) -> str:
    """A tool on PATH (or in sbin); CI must have it (scripts/test installs it), elsewhere skip."""
    found = shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/sbin") / tool) if p.is_file()), None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs {tool}: install the Debian package {package}")
        pytest.skip(f"{tool} is not installed (Debian package {package})")
    return found


def golden(name: str) -> str:
    return (GOLDEN_DIR / name).read_text()


def in_network_namespace(argv: list[str]) -> list[str]:
    """nft --check talks netlink to a kernel; the Nix build uses a userspace kernel (lkl) instead."""
    if os.geteuid() == 0:
        return ["unshare", "--net", "--", *argv]
    return ["unshare", "--user", "--map-root-user", "--net", "--", *argv]


# --- nftables: networking.nftables.checkRuleset --------------------------------------------------


def nft_check(ruleset: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """nftables.nix's checkPhase: drop the include of the state file in /var, check the rest."""
    deletions = tmp_path / "nftables-deletions"
    deletions.write_text(golden("nftables-deletions.nft"))
    text = ruleset.replace('include "/var/lib/nftables/deletions.nft"', "")
    # The deletions file is a store path the build can read; here, the golden copy of it.
    text = re.sub(rf"{ZEROED}nftables-deletions", str(deletions), text)
    rules = tmp_path / "ruleset.conf"
    rules.write_text(text)
    nft = need("nft", "nftables")
    return subprocess.run(
        in_network_namespace([nft, "--check", "--file", str(rules)]),
        capture_output=True,
        text=True,
        check=False,
    )


def test_nftables_ruleset_passes_nft_check(tmp_path: Path) -> None:
    done = nft_check(golden("nftables.nft"), tmp_path)
    assert done.returncode == 0, done.stderr


def test_nft_check_rejects_a_rule_on_a_missing_set(tmp_path: Path) -> None:
    broken = golden("nftables.nft").replace("@ivm_tcp_ports", "@ivm_no_such_set", 1)
    assert broken != golden("nftables.nft")
    assert nft_check(broken, tmp_path).returncode != 0


# --- sshd: the sshd module's check-sshd-config ---------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("IVM_TEST_CACHE", Path.home() / ".cache" / "ivm-tests"))


def unpacked_sshd() -> tuple[Path, Path]:
    """Debian's sshd, downloaded and unpacked once (installing openssh-server would start a daemon),
    with the libraries it needs that this host lacks: (sshd, library directory)."""
    apt_get = need("apt-get", "apt")
    root = cache_dir() / "openssh-server"
    if not (root / "usr" / "sbin" / "sshd").is_file():
        depends = subprocess.run(
            ["apt-cache", "depends", "openssh-server"], capture_output=True, text=True, check=True
        ).stdout
        libs = re.findall(r"^\s*Depends: (lib\S+)$", depends, re.MULTILINE)
        missing = [
            lib
            for lib in libs
            if subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}", lib], capture_output=True, text=True, check=False
            ).stdout.split()[-1:]
            != ["installed"]
        ]
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".sshd-", dir=root.parent))
        try:
            for package in ["openssh-server", *missing]:
                done = subprocess.run(
                    [apt_get, "download", package], cwd=tmp, capture_output=True, text=True, check=False
                )
                if done.returncode != 0:
                    pytest.skip(f"cannot download {package}: {done.stderr.strip()[-200:]}")
            for deb in tmp.glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
            shutil.rmtree(root, ignore_errors=True)
            (tmp / "root").rename(root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    libdirs = sorted({p.parent for p in root.rglob("lib*.so*")})
    return root / "usr" / "sbin" / "sshd", libdirs[0] if libdirs else root


def supported(query: str) -> set[str]:
    """What this OpenSSH knows (the client of the same Debian release; sshd has no -Q)."""
    ssh = need("ssh", "openssh-client")
    return set(subprocess.run([ssh, "-Q", query], capture_output=True, text=True, check=True).stdout.split())


def keep_known(config: str, option: str, known: set[str]) -> str:
    def drop(m: re.Match[str]) -> str:
        return f"{option} " + ",".join(a for a in m[1].split(",") if a in known)

    return re.sub(rf"^{option} (\S+)$", drop, config, flags=re.MULTILINE)


def sshd_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    sshd, libdir = unpacked_sshd()
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(libdir)}
    # This sshd may predate algorithms the pinned OpenSSH offers: drop only those it does not know.
    for option, query in (("KexAlgorithms", "kex"), ("Ciphers", "cipher"), ("Macs", "mac")):
        config = keep_known(config, option, supported(query))
    path = tmp_path / "sshd_config"
    path.write_text(config)
    ports = re.findall(r"^Port (\d+)$", config, re.MULTILINE) or ["22"]
    usage = subprocess.run([str(sshd), "-G"], env=env, capture_output=True, text=True, check=False)
    has_g = "unknown option -- G" not in usage.stderr
    for port in ports:
        if has_g:
            argv = [str(sshd), "-G", "-T", "-C", f"lport={port}", "-f", str(path)]
        else:
            # An sshd without -G (Debian 12's): -T then wants a host key (the identity's is not there at
            # build time either), the privilege separation user and /run/sshd: a private namespace.
            host_key = tmp_path / "host_key"
            if not host_key.exists():
                keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)]
                subprocess.run(keygen, check=True)
            passwd = tmp_path / "passwd"
            passwd.write_text(
                Path("/etc/passwd").read_text() + "sshd:x:65534:65534::/run/sshd:/usr/sbin/nologin\n"
            )
            test = " && ".join(
                [
                    f"mount --bind {passwd} /etc/passwd",
                    "mount -t tmpfs ivm-run /run",
                    "mkdir /run/sshd",
                    f"exec {sshd} -T -C lport={port} -f {path} -h {host_key}",
                ]
            )
            as_root = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
            argv = ["unshare", *as_root, "--mount", "--", "sh", "-c", test]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return done
    return done


def test_sshd_config_passes_sshds_own_check(tmp_path: Path) -> None:
    done = sshd_check(golden("sshd_config"), tmp_path)
    assert done.returncode == 0, done.stderr


def test_sshd_check_rejects_an_unknown_option(tmp_path: Path) -> None:
    assert sshd_check(golden("sshd_config") + "NoSuchOption yes\n", tmp_path).returncode != 0


# --- writeShellApplication: bash -n and shellcheck; the apps' launchers too -----------------------

SCRIPTS = sorted(p.relative_to(GOLDEN_DIR) for p in (GOLDEN_DIR / "scripts").iterdir()) + sorted(
    p.relative_to(GOLDEN_DIR) for p in (GOLDEN_DIR / "launchers").iterdir()
)


def shell_check(script: Path) -> subprocess.CompletedProcess[str]:
    """stdenv.shellDryRun, then shellcheck with no flags (no module excludes a check)."""
    dry = subprocess.run(
        ["bash", "--norc", "-n", "-O", "extglob", str(script)], capture_output=True, text=True, check=False
    )
    if dry.returncode != 0:
        return dry
    shellcheck = need("shellcheck", "shellcheck")
    return subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", SCRIPTS, ids=str)
def test_script_passes_bash_n_and_shellcheck(name: Path) -> None:
    done = shell_check(GOLDEN_DIR / name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_rejects_an_unquoted_expansion(tmp_path: Path) -> None:
    script = tmp_path / "bad"
    script.write_text(golden("scripts/ivm-firewall-ports") + "\nrm -rf $1/x\n")
    assert shell_check(script).returncode != 0


# --- the image: raw -> qcow2 (modules/image.nix, system.build.ivmImage) --------------------------


def test_the_image_conversion_makes_one_qcow2_equal_to_the_raw_image(tmp_path: Path) -> None:
    qemu_img = need("qemu-img", "qemu-utils")
    sfdisk = need("sfdisk", "fdisk")
    command = golden("image/ivm-image.sh")
    raw_ref = re.search(rf"{ZEROED}[^/\s]+/(\S+)", command)
    assert raw_ref, command
    # A small GPT disk stands in for image.repart's output, which cannot be built here.
    raw = tmp_path / raw_ref[1]
    with raw.open("wb") as f:
        f.truncate(8 * 1024 * 1024)
    subprocess.run([sfdisk, "-q", str(raw)], input=b"label: gpt\n,,U\n", check=True)
    script = command.replace(raw_ref[0], str(raw))
    out = tmp_path / "out"
    bin_dir = str(Path(qemu_img).parent)
    subprocess.run(
        ["bash", "-euc", script], env={"out": str(out), "PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True
    )
    # The tool takes a directory holding exactly one *.qcow2.
    images = list(out.iterdir())
    assert [p.suffix for p in images] == [".qcow2"]
    info = subprocess.run(
        [qemu_img, "info", "--output=json", str(images[0])], capture_output=True, text=True, check=True
    ).stdout
    assert '"format": "qcow2"' in info
    assert "backing-filename" not in info
    same = subprocess.run(
        [qemu_img, "compare", "-f", "raw", "-F", "qcow2", str(raw), str(images[0])], check=False
    )
    assert same.returncode == 0
