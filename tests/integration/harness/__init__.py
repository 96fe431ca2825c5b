"""Helpers for integration tests: a real libvirt daemon, scratch pools and the guest's console."""
