"""The test lab, shared by tests/integration and bench/: a real libvirt daemon, scratch pools, a second
host, the guest's console and report, and the stand-in guests (standin/, standin_systemd/)."""
