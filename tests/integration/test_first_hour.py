"""What a newcomer runs into on a real daemon: an `up --image` that cannot take effect says so."""

from __future__ import annotations

from tests.integration.conftest import Fleet, Images, vm_name


def test_up_with_another_image_says_the_vm_runs_another_base(fleet: Fleet, images: Images) -> None:
    name = fleet.add(vm_name())
    fleet.ivm("create", name, "--image", str(images.a))
    before = fleet.volumes()
    r = fleet.ivm("create", name, "--image", str(images.b))
    assert "nothing to do" not in r.stdout
    assert "not --image's base" in r.stdout and f"ivm upgrade {name} --image {images.b}" in r.stdout
    assert fleet.volumes() == before  # no second base imported, nothing replaced
    r = fleet.ivm("create", name, "--image", str(images.a))
    assert "nothing to do" in r.stdout and "not --image's" not in r.stdout
