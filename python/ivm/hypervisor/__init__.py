"""The one door to a hypervisor: libvirt's API (local or remote URIs), and nothing else."""
