"""ivm: many libvirt VMs from one immutable NixOS base image."""

# The same as pyproject.toml's (a unit test checks): importlib.metadata would cost --version ~35 ms.
__version__ = "0.2.0"
