"""ivm: many libvirt VMs from one immutable NixOS base image."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ivm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
