"""Benchmarks of ivm against the specification's path, on a real libvirt daemon (`python -m bench`)."""
