"""A systemd stand-in guest for integration tests: Debian's systemd, kernel and sshd, booting the
ivm guest's own initrd units, fstab and identity import from the golden files."""

from .image import build_systemd_standin

# What build_systemd_standin needs on a Debian host, besides the busybox stand-in's packages.
APT_PACKAGES = ("dracut-core", "mmdebstrap", "erofs-utils", "gcc", "libc6-dev", "kmod", "openssh-client")

__all__ = ["APT_PACKAGES", "build_systemd_standin"]
