"""The key a case table's {pub}, {blob} and {key} stand for: one ed25519 pair made by ssh-keygen,
and {cert}, {user_cert} and {cert_head}: certificates of its public key from a throwaway CA."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True)
class Keys:
    private: str
    public: str
    certs: dict[str, str] = field(default_factory=dict)  # placeholder -> text

    def fill(self, text: str) -> str:
        """The case text with its placeholders replaced."""
        blob = self.public.split()[1]
        for name, value in self.certs.items():
            text = text.replace(f"{{{name}}}", value)
        return text.replace("{pub}", self.public).replace("{blob}", blob).replace("{key}", self.private)


def make_keys(directory: Path) -> Keys:
    path = directory / "case-key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "case@test", "-f", str(path)], check=True
    )
    return with_certificates(Keys(path.read_text(), path.with_suffix(".pub").read_text()), directory)


def with_certificates(keys: Keys, directory: Path) -> Keys:
    """A host and a user certificate of `keys.public`, signed by a CA made here and thrown away."""
    ca = directory / "case-ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    certs = {}
    for placeholder, kind in (("cert", ["-h"]), ("user_cert", [])):
        pub = directory / f"{placeholder}.pub"
        pub.write_text(keys.public)
        subprocess.run(
            ["ssh-keygen", "-q", "-s", str(ca), *kind, "-I", "web1", "-n", "web1", str(pub)], check=True
        )
        certs[placeholder] = (directory / f"{placeholder}-cert.pub").read_text().strip()
    cert_type, encoded = certs["cert"].split()[:2]
    certs["cert_head"] = f"{cert_type} {encoded[:64]}"
    return replace(keys, certs=certs)
