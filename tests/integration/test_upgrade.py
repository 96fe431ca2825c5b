"""Fleet lifecycle on a real daemon with the stand-in guest: upgrade keeps /var, rollback, identity
changes, gc, drift, and per-VM failure isolation."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.integration.conftest import Fleet, Images, vm_name
from tests.lab.standin.image import build_standin_image


def created(fleet: Fleet, image: Path, **overrides: object) -> str:
    name = fleet.add(vm_name(), **overrides)
    fleet.ivm("create", name, "--image", str(image))
    fleet.ivm("define", name)
    return name


def test_upgrades_keep_var_and_rollback_returns(fleet: Fleet, images: Images) -> None:
    name = created(fleet, images.a)
    assert fleet.boot(name).var_counter == 1
    counter = 1
    for step, (image, marker) in enumerate([(images.b, "B"), (images.a, "A")] * 2 + [(images.b, "B")]):
        r = fleet.ivm("upgrade", name, "--image", str(image))
        assert re.search(rf"{name}: base \w{{12}} -> \w{{12}}", r.stdout), r.stdout
        assert "1 upgraded, 0 up to date, 0 failed" in r.stdout
        report = fleet.boot(name)
        counter += 1
        assert (report.marker, report.var_counter, report.var_formatted) == (marker, counter, False), step
    # the same image again: nothing to do
    assert "up to date" in fleet.ivm("upgrade", name, "--image", str(images.b)).stdout

    r = fleet.ivm("rollback", name)
    assert "base" in r.stdout
    report = fleet.boot(name)
    assert report.marker == "A" and report.var_counter == counter + 1
    status = json.loads(fleet.ivm("status", name, "--json", "--no-eval").stdout)[0]
    assert status["previous_base"] and status["base"] != status["previous_base"]


def test_identity_change_applies_on_upgrade(fleet: Fleet, images: Images) -> None:
    name = created(fleet, images.a)
    assert "tcp_ports" not in fleet.boot(name).identity_lines
    (fleet.root / "machines" / name / "tcp_ports").write_text("22\n8443\n")
    r = fleet.ivm("upgrade", name, "--image", str(images.a))
    assert f"{name}: identity rebuilt" in r.stdout
    report = fleet.boot(name)
    assert report.identity_lines["tcp_ports"] == ("22", "8443") and report.var_counter == 2


def test_upgrade_of_a_running_vm_restarts_it(fleet: Fleet, images: Images) -> None:
    name = created(fleet, images.a)
    fleet.ivm("start", name)
    # the stand-in firmware ignores ACPI: without --force the upgrade refuses and changes nothing
    r = fleet.ivm("upgrade", name, "--image", str(images.b), "--timeout", "1", check=False)
    assert r.returncode == 1 and "nothing was changed" in r.stdout
    # this stand-in powers off after its report and has no guest agent: no health gate here
    r = fleet.ivm(
        "upgrade", name, "--image", str(images.b), "--timeout", "1", "--force", "--health-timeout", "0"
    )
    match = re.search(r"restarted after ([0-9.]+) s down", r.stdout)
    assert match, r.stdout
    from tests.lab.console import ConsoleCapture

    with ConsoleCapture(fleet.uri, name) as console:
        report = console.wait_done(180)
    assert report.marker == "B"


def test_gc_removes_exactly_the_unreferenced_bases(fleet: Fleet, images: Images, tmp_path: Path) -> None:
    keep = created(fleet, images.a)
    fleet.ivm("upgrade", keep, "--image", str(images.b))  # A stays as its previous base
    image_c = build_standin_image(tmp_path / "c.raw", "C")
    gone = fleet.add(vm_name())
    fleet.ivm("create", gone, "--image", str(image_c))
    before = [v for v in fleet.volumes() if v.startswith("base-")]
    assert len(before) == 3
    fleet.ivm("destroy", gone, "--delete-data")
    dry = fleet.ivm("gc", "--dry-run")
    assert dry.stdout.count("would delete base-") == 1 and len(fleet.volumes()) == len(before) + 3
    assert f"({keep} runs it;" in dry.stdout and f"({keep}'s previous base, for rollback)" in dry.stdout
    fleet.ivm("gc")
    after = [v for v in fleet.volumes() if v.startswith("base-")]
    assert len(after) == 2 and set(after) < set(before)
    assert "0 deleted" in fleet.ivm("gc").stdout


def test_drift_marks_vms_behind_the_newest_base(fleet: Fleet, images: Images) -> None:
    a = created(fleet, images.a, image_attr="image-web")
    b = created(fleet, images.a, image_attr="image-web")
    rows = {r["name"]: r for r in json.loads(fleet.ivm("status", "--json", "--no-eval").stdout)}
    assert rows[a]["behind"] is False and rows[b]["behind"] is False
    fleet.ivm("upgrade", a, "--image", str(images.b))
    rows = {r["name"]: r for r in json.loads(fleet.ivm("status", "--json", "--no-eval").stdout)}
    assert rows[a]["behind"] is False and rows[b]["behind"] is True
    assert rows[b]["current_base"] == rows[a]["base"]
    rows = {r["name"]: r for r in json.loads(fleet.ivm("status", "--json", "--image", str(images.a)).stdout)}
    assert rows[a]["behind"] is True and rows[b]["behind"] is False


def test_one_failure_does_not_stop_the_others(fleet: Fleet, images: Images) -> None:
    good, bad = created(fleet, images.a), created(fleet, images.a)
    (fleet.root / "machines" / bad / "tcp_ports").write_text("http\n")
    r = fleet.ivm("upgrade", "--all", "--image", str(images.b), check=False)
    assert r.returncode == 1
    assert f"{bad}: failed:" in r.stdout and "tcp_ports" in r.stdout
    assert re.search(rf"{good}: base \w+ -> \w+", r.stdout)
    assert "1 upgraded, 0 up to date, 1 failed" in r.stdout
    assert r.stderr.strip().splitlines()[-1].startswith("ivm: error: 1 of 2 VMs failed")
    (fleet.root / "machines" / bad / "tcp_ports").write_text("80\n")
    r = fleet.ivm("upgrade", "--all", "--image", str(images.b))
    assert "1 upgraded, 1 up to date, 0 failed" in r.stdout
