"""Capture a running domain's serial console through libvirt, and read the stand-in's report.

QEMU's pty drops guest output while no client holds the console, so open the capture right after
`virDomain.create()` (or `ivm start`). Measured here (TCG, OVMF, 1 vCPU, idle host), seconds after
create(): firmware's first output 3.6, kernel 6-7, first IVM-REPORT line 7.5-8.8, power-off 9-11.5
(first boot, with empty NVRAM, slowest); with other guests booting, up to twice that. A capture
opened 4 s late lost the firmware lines, 7 s late the kernel's; the report survived both, but
under KVM every stage is far shorter. Opened after power-off, it fails: the domain is not running.
"""

from __future__ import annotations

import contextlib
import threading
import time
from types import TracebackType
from typing import Any

import libvirt

from .report import Report, parse_report


class ConsoleError(RuntimeError):
    """The guest did not finish its report."""


class ConsoleCapture:
    """Collect a domain's console lines in a background thread until the domain shuts off."""

    def __init__(self, uri: str, domain_name: str) -> None:
        self.domain_name = domain_name
        # libvirt would also print every error it raises on stderr.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self._conn: Any = libvirt.open(uri)
        self._stream: Any = self._conn.newStream(0)
        try:
            self._domain: Any = self._conn.lookupByName(domain_name)
            # FORCE: take the console over from a stale session instead of failing.
            self._domain.openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except libvirt.libvirtError as e:
            self._conn.close()
            raise ConsoleError(f"{domain_name}: cannot open its console: {e}") from e
        self.opened_at = time.monotonic()
        self.first_output_at: float | None = None
        self.ended_at: float | None = None
        self._lines: list[tuple[float, str]] = []
        self._partial = b""
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"console-{domain_name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                data = self._stream.recv(65536)
                if not isinstance(data, bytes) or not data:
                    break  # EOF: QEMU closed the pty because the domain stopped
                self._add(data)
        except libvirt.libvirtError:
            pass  # the stream is aborted when the domain goes away
        finally:
            if self._partial:
                self._add(b"\n")
            self.ended_at = time.monotonic()
            self._ended.set()

    def _add(self, data: bytes) -> None:
        self.first_output_at = self.first_output_at or time.monotonic()
        *complete, self._partial = (self._partial + data).split(b"\n")
        with self._lock:
            for raw in complete:
                line = raw.decode(errors="replace").rstrip("\r")
                self._lines.append((time.monotonic(), line))
                if line.endswith("IVM-REPORT done"):
                    self._done.set()

    @property
    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, line in self._lines]

    @property
    def timed_lines(self) -> list[tuple[float, str]]:
        """Lines with the time.monotonic() at which each was complete."""
        with self._lock:
            return list(self._lines)

    def wait_done(self, timeout: float) -> Report:
        """Wait for `IVM-REPORT done` and for the domain to be shut off; return the parsed report."""
        deadline = time.monotonic() + timeout
        while not self._done.is_set() and not self._ended.is_set() and time.monotonic() < deadline:
            self._done.wait(0.2)
        if not self._done.is_set():
            why = "console closed" if self._ended.is_set() else f"no report after {timeout:.0f} s"
            raise ConsoleError(f"{self.domain_name}: {why}; last lines:\n" + self.tail())
        # /init powers off right after `done`. libvirt notices QEMU's exit only after the console
        # closes, so wait for both: then the caller may start the domain again.
        grace = time.monotonic() + max(deadline - time.monotonic(), 30.0)
        while not self._ended.is_set() or self._domain.isActive():
            if time.monotonic() > grace:
                raise ConsoleError(f"{self.domain_name}: reported done but did not power off")
            time.sleep(0.1)
        return parse_report(self.lines)

    def tail(self, count: int = 40) -> str:
        return "\n".join(self.lines[-count:])

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):  # the stream already ended with the domain
            self._stream.abort()
        self._thread.join(5)
        self._conn.close()

    def __enter__(self) -> ConsoleCapture:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
