"""Opening a libvirt connection and turning libvirt's errors into ToolError, once, here."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from ivm.errors import ToolError, UsageError
from ivm.hypervisor.handles import Connection
from ivm.hypervisor.uri import checked_uri, socket_problem

log = logging.getLogger("ivm.libvirt")


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ivm reports each one itself, once."""


libvirt.registerErrorHandler(_quiet, None)


@contextmanager
def libvirt_errors(action: str, uri: str | None = None) -> Iterator[None]:
    """Run a block of libvirt calls; a libvirtError becomes one ToolError saying what failed."""
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, action, uri) from None


def translate(e: libvirt.libvirtError, action: str, uri: str | None = None) -> ToolError:
    message = (e.get_error_message() or str(e)).strip()
    log.debug("libvirt error while %s: code=%s %s", action, e.get_error_code(), message)
    lowered = message.lower()
    if "firmware" in lowered and ("unable to find" in lowered or "not found" in lowered):
        return ToolError(
            f"{action}: no suitable UEFI firmware on the hypervisor ({message})",
            "install OVMF (Debian/Ubuntu: apt install ovmf; Fedora: edk2-ovmf) or set "
            "OVMF_CODE and OVMF_VARS to its files",
        )
    if e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INTERNAL_ERROR) and (
        "connect" in lowered or "socket" in lowered
    ):
        return _cannot_connect(uri, message)
    return ToolError(f"{action} failed: {message}")


def _cannot_connect(uri: str | None, message: str) -> ToolError:
    target = uri or "the default URI"
    lowered = message.lower()
    if "unexpected qemu uri path" in lowered or "no connection driver available" in lowered:
        return UsageError(
            f"cannot connect to libvirt at {target}: not a URI this host understands ({message})",
            "check its spelling (qemu:///system, qemu:///session, qemu+ssh://HOST/system) in --connect, "
            "LIBVIRT_URI, LIBVIRT_DEFAULT_URI or the machine's libvirt_uri",
        )
    if "permission denied" in message.lower() or "authentication" in message.lower():
        hint = (
            "you may not use this daemon: join the 'libvirt' group (then log in again), use "
            "qemu:///session (--connect or LIBVIRT_DEFAULT_URI), or run as root (SUDO=sudo for just)"
        )
    else:
        hint = (
            "start the libvirt daemon (systemctl start libvirtd, or virtqemud and virtstoraged) "
            "or choose another URI with --connect / LIBVIRT_URI"
        )
    return ToolError(f"cannot connect to libvirt at {target}: {message}", hint)


@contextmanager
def connect(uri: str) -> Iterator[Connection]:
    """An open libvirt connection, closed afterwards; only to a URI hypervisor/uri.py accepts."""
    problem = socket_problem(checked_uri(uri))
    if problem is not None:
        raise _cannot_connect(uri, problem)
    log.debug("connecting to %s", uri)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise _cannot_connect(uri, (e.get_error_message() or str(e)).strip()) from None
    try:
        yield conn
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            log.debug("closing the connection to %s failed", uri)
