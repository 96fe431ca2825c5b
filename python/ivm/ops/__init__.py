"""What each command does, decided here; the world is touched only through hypervisor/ and run.py."""
