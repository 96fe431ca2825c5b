"""ivm: many libvirt VMs from one immutable NixOS base image."""


def __getattr__(name: str) -> str:
    """`ivm.__version__`, looked up on first use: importing importlib.metadata costs ~35 ms, a fifth
    of a short command such as `ivm start`, and only --version and define need it."""
    if name != "__version__":
        raise AttributeError(f"module 'ivm' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        found = version("ivm")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
