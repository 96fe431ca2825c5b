"""Which libvirt URIs ivm connects to: local daemons and encrypted, host-verified remote transports.

A URI can come from a teammate's commit (machines/<name>/meta.nix), so it is hostile input: the
`ext` transport and the `command`/`netcat` parameters run programs, `tcp` and `no_verify` send the
VM's private host key in clear or to an unverified peer, `keyfile`/`pkipath`/`known_hosts` pick the
credentials or trust store. Only the forms below are accepted; nix/machine-meta.nix holds the same
rule for evaluation.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from ivm.errors import UsageError


class Transport(StrEnum):
    LOCAL = "local"  # qemu:///system: libvirt's own socket on this machine
    UNIX = "unix"  # qemu+unix:///system?socket=PATH
    SSH = "ssh"
    LIBSSH = "libssh"
    LIBSSH2 = "libssh2"
    TLS = "tls"  # qemu+tls://host/system, and qemu://host/system (TLS is the default with a host)


REMOTE = (Transport.SSH, Transport.LIBSSH, Transport.LIBSSH2, Transport.TLS)

REFUSED_TRANSPORTS = {
    "ext": "the ext transport runs a program named in the URI",
    "tcp": "the tcp transport sends everything, the VM's private host key included, without encryption",
}
REFUSED_PARAMS = {
    "command": "runs a program of the URI's choosing",
    "netcat": "runs a program of the URI's choosing on the remote host",
    "proxy": "chooses the program that relays the connection",
    "no_verify": "turns off the check of the server's certificate",
    "keyfile": "chooses the SSH private key",
    "pkipath": "chooses the TLS certificates",
    "known_hosts": "chooses which SSH host keys are trusted",
    "known_hosts_verify": "can turn off the SSH host key check",
    "tls_priority": "can weaken TLS",
    "name": "names another URI for the remote daemon to open",
}
PARAM_VALUES = {
    "mode": re.compile(r"auto|legacy|direct"),
    "no_tty": re.compile(r"[01]"),
    "sshauth": re.compile(r"[a-z-]+(,[a-z-]+)*"),
    "socket": re.compile(r"/[A-Za-z0-9_./-]+"),
}
# no leading '-': a user or host is handed to ssh, which would read it as an option
HOST_RE = re.compile(
    r"([A-Za-z0-9_][A-Za-z0-9._-]*@)?([A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
)
SHAPE_RE = re.compile(
    r"(?P<driver>[a-z0-9]+)(\+(?P<transport>[a-z0-9]+))?://(?P<host>[^/?]*)(?P<path>/[^?]*)(\?(?P<query>.*))?"
)
HINT = (
    "use qemu:///system, qemu:///session, qemu+ssh://[USER@]HOST/system or qemu+tls://HOST/system "
    "(check --connect, LIBVIRT_URI and the machine's libvirt_uri)"
)


class UnsafeUriError(ValueError):
    """A URI ivm will not connect to; the message says why."""


@dataclass(frozen=True)
class LibvirtUri:
    text: str
    driver: str  # qemu or test
    transport: Transport
    host: str  # empty on this machine
    params: tuple[tuple[str, str], ...]

    @property
    def remote(self) -> bool:
        return self.host != ""

    def param(self, key: str) -> str | None:
        return next((v for k, v in self.params if k == key), None)


def parse_uri(text: str) -> LibvirtUri:
    """Parse and judge a libvirt URI; UnsafeUriError says what is wrong. Pure."""
    if any(c in text for c in "%;#\\") or not text.isprintable() or " " in text:
        raise UnsafeUriError("it holds characters libvirt decodes or splits on (% ; # \\ space or control)")
    m = SHAPE_RE.fullmatch(text)
    if m is None:
        raise UnsafeUriError("it is not a libvirt URI of the form DRIVER[+TRANSPORT]://[HOST]/PATH")
    driver, given, host, path = m["driver"], m["transport"], m["host"], m["path"]
    if given in REFUSED_TRANSPORTS:
        raise UnsafeUriError(REFUSED_TRANSPORTS[given])
    params = _params(m["query"])
    if driver == "test":
        if given or host or path != "/default" or params:
            raise UnsafeUriError("only test:///default is accepted for libvirt's test driver")
        return LibvirtUri(text, driver, Transport.LOCAL, "", ())
    if driver != "qemu":
        raise UnsafeUriError(f"ivm runs QEMU domains (qemu://), not {driver}")
    if path not in ("/system", "/session"):
        raise UnsafeUriError(f"the path must be /system or /session, not {path}")
    transport = _transport(given, host)
    if host and not HOST_RE.fullmatch(host):
        raise UnsafeUriError(f"{host!r} is not a host name or address")
    if any(k == "socket" for k, _ in params) and transport is not Transport.UNIX:
        raise UnsafeUriError("socket= is accepted only with qemu+unix:// (a socket on this machine)")
    ssh = (Transport.SSH, Transport.LIBSSH, Transport.LIBSSH2)
    if transport not in ssh and {"sshauth", "no_tty"} & {k for k, _ in params}:
        raise UnsafeUriError("sshauth= and no_tty= belong to the ssh transports")
    return LibvirtUri(text, driver, transport, host, params)


def _transport(given: str | None, host: str) -> Transport:
    if given is None:
        return Transport.TLS if host else Transport.LOCAL
    try:
        transport = Transport(given)
    except ValueError:
        known = ", ".join(t.value for t in Transport if t is not Transport.LOCAL)
        raise UnsafeUriError(f"transport {given} is not one ivm uses ({known})") from None
    if transport is Transport.LOCAL:
        raise UnsafeUriError("transport local is written qemu:///system")
    if (transport in REMOTE) != bool(host):
        need = "needs a host" if host == "" else "takes no host"
        raise UnsafeUriError(f"transport {given} {need}")
    return transport


def _params(query: str | None) -> tuple[tuple[str, str], ...]:
    if not query:
        return ()
    out: list[tuple[str, str]] = []
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if key in REFUSED_PARAMS:
            raise UnsafeUriError(f"the {key}= parameter {REFUSED_PARAMS[key]}")
        if key not in PARAM_VALUES:
            raise UnsafeUriError(f"the parameter {key!r} is not one ivm accepts ({', '.join(PARAM_VALUES)})")
        if not sep or not PARAM_VALUES[key].fullmatch(value):
            raise UnsafeUriError(f"{key}={value} is not an accepted value")
        if any(k == key for k, _ in out):
            raise UnsafeUriError(f"the parameter {key} is given twice")
        out.append((key, value))
    return tuple(out)


def checked_uri(text: str, source: str = "libvirt URI") -> LibvirtUri:
    """parse_uri as a usage error naming where the URI came from."""
    try:
        return parse_uri(text)
    except UnsafeUriError as e:
        raise UsageError(f"{source} {text!r} is refused: {e}", HINT) from None


def socket_problem(uri: LibvirtUri) -> str | None:
    """Why the socket= path cannot be connected to (it does not exist), or None. A socket that is
    not owned by root or by the user running ivm is refused outright: another user's socket could
    be a fake daemon waiting for a private host key. A missing one is refused too, so a socket made
    after this check is never used unchecked."""
    socket = uri.param("socket")
    if socket is None:
        return None
    try:
        info = Path(socket).lstat()
    except OSError as e:
        return f"{socket}: {e.strerror}"
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in (0, os.getuid()):
        raise UsageError(
            f"libvirt socket {socket} is not a socket owned by root or by you; ivm will not send to it",
            "point socket= at the socket of a libvirt daemon you or root run",
        )
    return None


def secret_notice(uri: LibvirtUri, volume: str) -> str | None:
    """The line to show before a private host key leaves this machine, or None when it stays here.
    Every remote transport ivm accepts is encrypted and checks the peer, so this names where it goes."""
    if not uri.remote:
        return None
    return f"sending a private host key ({volume}) to {uri.host} over {uri.transport.value} (encrypted)"


def is_local(uri: str) -> bool:
    """A URI without a host part talks to this machine (qemu:///system, test:///default)."""
    return urlsplit(uri).netloc == ""


def is_session(uri: str) -> bool:
    """A local per-user daemon (qemu:///session): it runs QEMU as the calling user."""
    return urlsplit(uri).path.rstrip("/").endswith("session") and is_local(uri)


def default_pool_path(uri: str, pool: str) -> str:
    """Where a dir pool lives unless IVM_POOL_PATH says: a folder named after the pool in libvirt's
    images dir for this kind of connection, so two pools never share a directory."""
    if is_session(uri):
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return str(Path(data) / "libvirt" / "images" / pool)
    return f"/var/lib/libvirt/images/{pool}"
