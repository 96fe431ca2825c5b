"""VM names are hostname labels."""

from __future__ import annotations

import pytest

from ivm.errors import UsageError
from ivm.names import check_vm_name


@pytest.mark.parametrize("name", ["a", "web1", "db-2", "a" * 63, "x0-y"])
def test_valid(name: str) -> None:
    assert check_vm_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "1web", "-a", "a-", "Web", "a_b", "a.b", "../x", "a/b", "a" * 64, "wéb", "a b", "a\n"]
)
def test_invalid(name: str) -> None:
    with pytest.raises(UsageError, match="invalid VM name"):
        check_vm_name(name)
