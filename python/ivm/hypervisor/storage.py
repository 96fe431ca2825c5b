"""ivm's storage pool and its volumes, through libvirt's storage API only.

Uploads write a volume's header last: until the final bytes land, the volume does not carry a
valid qcow2 or ext4 header, so an interrupted import is recognised and redone, never used.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import libvirt
from lxml import etree

from ivm.errors import ToolError
from ivm.failpoints import failpoint
from ivm.hypervisor.connection import libvirt_errors, translate
from ivm.hypervisor.handles import Connection, PoolHandle, StreamHandle, VolumeHandle
from ivm.lock import resource_lock
from ivm.storage_xml import pool_xml, source_pool_xml, volume_xml

log = logging.getLogger("ivm.storage")
CHUNK = 4 * 1024 * 1024
Progress = Callable[[int], None]
POOL_WAIT_S = 300.0  # another run defining, building and starting the pool
SOURCE_POOL_PREFIX = "ivm-import-"  # transient pools over a local import's temporary folder


class Storage:
    """One storage pool on one connection."""

    def __init__(self, conn: Connection, name: str, path: str):
        self.conn = conn
        self.name = name
        self.path = path
        self._pool: PoolHandle | None = None
        self._listed: dict[str, VolumeHandle] | None = None  # every volume, when a fleet-wide read asked
        self._directory: str | None = None  # the pool's folder as its definition gives it

    def list_all(self) -> None:
        """Fetch every volume of the pool in one call, so that looking up hundreds costs no more
        calls (`status` of a fleet); any change made through this object forgets the list.

        For reads only: the pool is not rescanned first. A rescan probes every file of the pool
        (three per VM) and only notices files changed behind libvirt's back; volumes made through
        the API are known to the daemon without one, and a volume's size and use are read fresh
        by `info` either way."""
        pool = self.find(refresh=False)
        if pool is not None:
            with libvirt_errors(f"listing volumes of pool {self.name}"):
                self._listed = {vol.name(): vol for vol in pool.listAllVolumes(0)}

    def find(self, refresh: bool = True) -> PoolHandle | None:
        """The pool if it exists (started, and refreshed unless told not to), else None. Creates
        nothing."""
        if self._pool is None:
            pool = self._lookup()
            if pool is None:
                return None
            with libvirt_errors(f"starting storage pool {self.name}"):
                if not pool.isActive():
                    with self._creation_lock():  # not while another run is still building it
                        self._start(pool)  # starting a pool scans it
                elif refresh:
                    _refresh(pool)
            self._pool = pool
        return self._pool

    def _lookup(self) -> PoolHandle | None:
        try:
            return self.conn.storagePoolLookupByName(self.name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                return None
            raise

    def _start(self, pool: PoolHandle) -> None:
        if not pool.isActive():
            pool.create(0)

    def _creation_lock(self) -> AbstractContextManager[None]:
        """Two runs using a new pool at once: one defines, builds and starts it, the other waits.
        (flock: never taken twice by one process, which would wait for itself.)"""
        return resource_lock(self.conn.getURI(), f"_pool-{self.name}", wait=POOL_WAIT_S)

    def ensure(self) -> PoolHandle:
        """The pool, defined, built, started and autostarted on first use."""
        with libvirt_errors(f"looking up storage pool {self.name}"):
            pool = self.find()
        if pool is not None:
            return pool
        with self._creation_lock(), libvirt_errors(f"creating storage pool {self.name} at {self.path}"):
            pool = self._lookup()  # another run may have made it while this one waited
            if pool is not None:
                self._start(pool)
                _refresh(pool)
                self._pool = pool
                return pool
            log.info("creating storage pool %s at %s", self.name, self.path)
            try:
                pool = self.conn.storagePoolDefineXML(pool_xml(self.name, self.path), 0)
            except libvirt.libvirtError as e:
                raise self._define_error(e) from None
            _build_or_undo(pool, self.path)
        self._pool = pool
        return pool

    def _define_error(self, e: libvirt.libvirtError) -> ToolError:
        message = (e.get_error_message() or str(e)).strip()
        if "source conflict" in message.lower() or "already exists" in message.lower():
            return ToolError(
                f"cannot create storage pool {self.name} at {self.path}: {message}",
                "another pool already uses that directory: set IVM_POOL_PATH to a directory of its own",
            )
        return translate(e, f"creating storage pool {self.name} at {self.path}")

    def remove_if_empty(self) -> bool:
        """Stop, delete and undefine the pool (its directory too) if it holds no volume.
        False if there is no such pool; refuses one with volumes, or one ivm would not have made."""
        with libvirt_errors(f"looking up storage pool {self.name}"):
            pool = self.find()
        if pool is None:
            return False
        with libvirt_errors(f"removing storage pool {self.name}"):
            volumes = sorted(pool.listVolumes())
            if volumes:
                listed = ", ".join(volumes[:5])
                raise ToolError(
                    f"storage pool {self.name} still holds {len(volumes)} volume(s): {listed}",
                    "destroy its VMs (ivm destroy NAME --delete-data) and run ivm gc first",
                )
            target = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path")
            if target != self.path:
                raise ToolError(
                    f"storage pool {self.name} lives at {target}, not where ivm makes it ({self.path})",
                    "ivm removes only a pool of its own; remove this one with virsh pool-delete and "
                    "pool-undefine if you mean it",
                )
            log.info("removing storage pool %s at %s", self.name, self.path)
            if pool.isActive():
                pool.destroy()
            pool.delete(0)
            pool.undefine()
        self._pool = None
        return True

    def volume(self, name: str) -> VolumeHandle | None:
        if self._listed is not None:
            return self._listed.get(name)
        pool = self.find()
        if pool is None:
            return None
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise translate(e, f"looking up volume {name}") from None

    def directory(self) -> str:
        """The pool's folder as the daemon names it (its target path), read once per connection."""
        if self._directory is None:
            pool = self.find()
            if pool is None:
                raise ToolError(f"storage pool {self.name} does not exist")
            with libvirt_errors(f"reading storage pool {self.name}"):
                doc = etree.fromstring(pool.XMLDesc(0).encode())
            self._directory = doc.findtext("target/path") or self.path
        return self._directory

    def volume_names(self) -> list[str]:
        pool = self.find()
        if pool is None:
            return []
        with libvirt_errors(f"listing volumes of pool {self.name}"):
            return sorted(pool.listVolumes())

    def volume_path(self, name: str) -> str:
        vol = self.volume(name)
        if vol is None:
            raise ToolError(f"volume {name} is missing from pool {self.name}")
        with libvirt_errors(f"reading volume {name}"):
            return str(vol.path())

    def backing_path(self, name: str) -> str | None:
        """The backing file an overlay volume points at, as libvirt reports it."""
        vol = self.volume(name)
        if vol is None:
            return None
        with libvirt_errors(f"reading volume {name}"):
            doc = etree.fromstring(vol.XMLDesc(0).encode())
        found = doc.find("backingStore/path")
        return found.text if found is not None else None

    def changed_at(self, name: str) -> float:
        """When the volume's content last changed (its file's ctime in a dir pool), 0 if unknown."""
        vol = self.volume(name)
        if vol is None:
            return 0.0
        with libvirt_errors(f"reading volume {name}"):
            doc = etree.fromstring(vol.XMLDesc(0).encode())
        stamp = doc.findtext("target/timestamps/ctime") or doc.findtext("target/timestamps/mtime")
        return float(stamp) if stamp else 0.0

    def info(self, name: str) -> tuple[int, int] | None:
        """(capacity, allocation) in bytes, or None if absent."""
        vol = self.volume(name)
        if vol is None:
            return None
        with libvirt_errors(f"reading volume {name}"):
            _type, capacity, allocation = vol.info()
        return int(capacity), int(allocation)

    def create(self, xml: str, name: str) -> VolumeHandle:
        self._listed = None
        pool = self.ensure()
        log.debug("creating volume %s", name)
        with libvirt_errors(f"creating volume {name} in pool {self.name}"):
            return pool.createXML(xml, 0)

    def delete(self, name: str, *, wipe: bool = False) -> bool:
        """Delete a volume; with `wipe`, overwrite its data with zeros first (a secret must not
        linger in the pool's free blocks)."""
        vol = self.volume(name)
        self._listed = None
        if vol is None:
            return False
        if wipe:
            _wipe(vol, name)
        log.debug("deleting volume %s", name)
        with libvirt_errors(f"deleting volume {name}"):
            vol.delete(0)
        return True

    def import_file(
        self,
        name: str,
        source: Path,
        *,
        header: int,
        mode: str,
        progress: Progress | None = None,
        disposable: bool = False,
        secret: bool = False,
    ) -> None:
        """Create volume `name` from a local file; its first `header` bytes are written last.

        A `disposable` source (a private temporary file ivm may change) on a daemon that shares
        this machine's files is copied by the daemon itself, at disk speed: its header is zeroed,
        the daemon clones it from a transient pool over its folder (virStorageVolCreateXMLFrom),
        then the header is uploaded. Anything else is streamed (sparsely) through the connection.
        """
        self._listed = None
        if disposable and shares_files(self.conn.getURI()):
            vol = self._clone(name, source, header, mode)
            if vol is not None:
                self._finish(vol, name, source, header, secret)
                return
        size = source.stat().st_size
        vol = self.create(volume_xml(name, size, "raw", mode=mode), name)
        try:
            with libvirt_errors(f"uploading {source} to volume {name}"):
                _upload(self.conn, vol, source, header, size, progress, sparse=True)
        except BaseException:
            _delete_quietly(vol, name, wipe=secret)
            raise
        self._finish(vol, name, source, header, secret)

    def _finish(self, vol: VolumeHandle, name: str, source: Path, header: int, secret: bool) -> None:
        """Write the header, the completeness marker, last."""
        try:
            failpoint("upload:data-sent")  # everything but the header: an incomplete volume
            with libvirt_errors(f"uploading {source} to volume {name}"):
                _upload(self.conn, vol, source, 0, header, None, sparse=False)
        except BaseException:
            _delete_quietly(vol, name, wipe=secret)
            raise
        pool = self.find()
        if pool is not None:
            with libvirt_errors(f"refreshing pool {self.name}"):
                _refresh(pool)

    def _clone(self, name: str, source: Path, header: int, mode: str) -> VolumeHandle | None:
        """The volume, holding everything but the header, copied by the daemon; None if the daemon
        cannot see the file (then the caller streams it)."""
        pool = self.ensure()
        with source.open("r+b") as f:
            head = os.pread(f.fileno(), header, 0)
            os.pwrite(f.fileno(), bytes(len(head)), 0)
            try:
                with _source_pool(self.conn, source.parent) as src_pool:
                    if src_pool is None:
                        return None
                    try:
                        src = src_pool.storageVolLookupByName(source.name)
                    except libvirt.libvirtError as e:
                        log.debug("the daemon does not see %s (%s); streaming it", source, e)
                        return None
                    size = source.stat().st_size
                    log.debug("cloning %s into volume %s", source, name)
                    with libvirt_errors(f"copying {source} to volume {name}"):
                        return pool.createXMLFrom(volume_xml(name, size, "raw", mode=mode), src, 0)
            finally:
                os.pwrite(f.fileno(), head, 0)  # the header goes up last, from the file

    def head(self, name: str, length: int) -> bytes:
        """The first bytes of a volume, downloaded through the connection."""
        vol = self.volume(name)
        if vol is None:
            return b""
        chunks: list[bytes] = []
        with libvirt_errors(f"reading volume {name}"):
            stream = self.conn.newStream(0)
            vol.download(stream, 0, length, 0)
            while sum(map(len, chunks)) < length:
                data = stream.recv(length)
                if not isinstance(data, bytes) or not data:
                    break
                chunks.append(data)
            stream.finish()
        return b"".join(chunks)[:length]


def _build_or_undo(pool: PoolHandle, path: str) -> None:
    """Build, start and autostart a just-defined pool; on failure leave nothing behind: no
    directory it made, no definition."""
    made_dir = not Path(path).exists()  # pool.delete only removes an empty directory, never files
    try:
        pool.build(0)
        pool.create(0)
        pool.setAutostart(1)
    except libvirt.libvirtError:
        try:
            if pool.isActive():
                pool.destroy()
            if made_dir:
                pool.delete(0)
        except libvirt.libvirtError:
            log.debug("undoing the half-made pool's directory failed")
        pool.undefine()
        raise


def shares_files(uri: str) -> bool:
    """True for a daemon reached on this machine's default socket (qemu:///system, qemu:///session):
    it sees the files ivm sees. A URI naming a transport or socket (qemu+ssh://, qemu+unix:///...?
    socket=) may be another machine, container or daemon: it gets a stream."""
    parts = urlsplit(uri)
    return parts.netloc == "" and "+" not in parts.scheme and not parts.query and parts.scheme != "test"


@contextmanager
def _source_pool(conn: Connection, folder: Path) -> Iterator[PoolHandle | None]:
    """A transient dir pool over `folder`, destroyed on exit (which never touches the files); None
    if the daemon cannot make one. Pools left by killed runs are removed first."""
    _remove_stale_source_pools(conn)
    name = f"{SOURCE_POOL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        pool = conn.storagePoolCreateXML(source_pool_xml(name, str(folder)), 0)
    except libvirt.libvirtError as e:
        log.debug("no transient pool over %s (%s); streaming instead", folder, e)
        yield None
        return
    try:
        yield pool
    finally:
        try:
            pool.destroy()
        except libvirt.libvirtError:
            log.warning("could not remove the transient storage pool %s; the next import does", name)


def _remove_stale_source_pools(conn: Connection) -> None:
    """Transient import pools whose ivm process is gone (killed while the daemon copied)."""
    try:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_TRANSIENT)
    except libvirt.libvirtError:
        return
    for pool in pools:
        try:
            pid = int(pool.name().removeprefix(SOURCE_POOL_PREFIX).split("-")[0])
        except ValueError:
            continue
        if not pool.name().startswith(SOURCE_POOL_PREFIX) or _alive(pid):
            continue
        try:
            pool.destroy()
            log.debug("removed the stale transient pool %s", pool.name())
        except libvirt.libvirtError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refresh(pool: PoolHandle) -> None:
    """Rescan the pool; skipped while another client streams a volume in it (libvirt refuses a
    refresh then, and volumes made through the API are known to it without one)."""
    try:
        pool.refresh(0)
    except libvirt.libvirtError as e:
        if "asynchronous jobs" not in (e.get_error_message() or ""):
            raise
        log.debug("not refreshing pool %s: another client is streaming a volume in it", pool.name())


def _upload(
    conn: Connection,
    vol: VolumeHandle,
    source: Path,
    start: int,
    end: int,
    progress: Progress | None,
    sparse: bool,
) -> None:
    if end <= start:
        return
    stream = conn.newStream(0)
    flags = libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0
    vol.upload(stream, start, end - start, flags)
    try:
        with source.open("rb") as f:
            fd = f.fileno()
            pos = start
            while pos < end:
                data_at = _next_data(fd, pos, end) if sparse else pos
                if data_at > pos:
                    stream.sendHole(data_at - pos, 0)
                    pos = data_at
                    if progress:
                        progress(pos)
                    continue
                hole_at = _next_hole(fd, pos, end) if sparse else end
                while pos < hole_at:
                    chunk = os.pread(fd, min(CHUNK, hole_at - pos), pos)
                    if not chunk:
                        raise ToolError(f"{source} shrank while it was being uploaded")
                    _send(stream, chunk)
                    pos += len(chunk)
                    if progress:
                        progress(pos)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            log.debug("aborting the upload stream failed")
        raise


def _send(stream: StreamHandle, chunk: bytes) -> None:
    while chunk:
        sent = stream.send(chunk)  # a blocking stream takes the whole chunk: no copy in the common case
        if sent < 0:
            raise ToolError("the upload stream failed")
        chunk = chunk[sent:]


def _next_data(fd: int, pos: int, end: int) -> int:
    try:
        return min(os.lseek(fd, pos, os.SEEK_DATA), end)
    except OSError:  # ENXIO: only a hole remains up to end of file
        return end


def _next_hole(fd: int, pos: int, end: int) -> int:
    try:
        return min(os.lseek(fd, pos, os.SEEK_HOLE), end)
    except OSError:
        return end


def _wipe(vol: VolumeHandle, name: str) -> None:
    log.debug("wiping volume %s", name)
    try:
        vol.wipe(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise translate(e, f"wiping volume {name}") from None
        log.warning("the storage driver cannot wipe %s; deleting it without overwriting it", name)


def _delete_quietly(vol: VolumeHandle, name: str, wipe: bool) -> None:
    try:
        if wipe:
            vol.wipe(0)  # a partial identity upload holds part of a private key
        vol.delete(0)
    except libvirt.libvirtError:
        log.warning("could not remove the partial volume %s; the next run replaces it", name)
