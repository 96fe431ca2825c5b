"""A stand-in guest image for integration tests: boots under UEFI and reports what it sees."""

from .image import build_standin_image
from .kernel import StandinError

# What build_standin_image needs on a Debian host (apt, dpkg and Python come with the system).
APT_PACKAGES = ("busybox-static", "dosfstools", "fdisk", "mtools", "systemd-boot-efi")

__all__ = ["APT_PACKAGES", "StandinError", "build_standin_image"]
