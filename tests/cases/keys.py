"""The key a case table's {pub}, {blob} and {key} stand for: one ed25519 pair made by ssh-keygen."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Keys:
    private: str
    public: str

    def fill(self, text: str) -> str:
        """The case text with its placeholders replaced."""
        blob = self.public.split()[1]
        return text.replace("{pub}", self.public).replace("{blob}", blob).replace("{key}", self.private)


def make_keys(directory: Path) -> Keys:
    path = directory / "case-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "case@test", "-f", str(path)], check=True
    )
    return Keys(path.read_text(), path.with_suffix(".pub").read_text())
