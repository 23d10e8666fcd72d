"""The XML documents the core feeds to driver actions on stdin, built for tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape


def _template(attrs: dict[str, object]) -> str:
    return "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in attrs.items())


def vm_document(
    vmid: int, placements: list[tuple[str, Path | str]], **template: object
) -> bytes:
    """A VM with one HISTORY per (hostname, DS_LOCATION), the last one current."""
    template.setdefault("CPU", 1)
    template.setdefault("MEMORY", 128)
    history = "".join(
        f"<HISTORY><SEQ>{seq}</SEQ><HOSTNAME>{host}</HOSTNAME>"
        f"<DS_LOCATION>{escape(str(ds))}</DS_LOCATION></HISTORY>"
        for seq, (host, ds) in enumerate(placements)
    )
    return (
        f"<VM><ID>{vmid}</ID><NAME>vm-{vmid}</NAME><TEMPLATE>{_template(template)}</TEMPLATE>"
        f"<HISTORY_RECORDS>{history}</HISTORY_RECORDS></VM>"
    ).encode()


def host_document(hid: int, name: str, **template: object) -> bytes:
    return (
        f"<HOST><ID>{hid}</ID><NAME>{name}</NAME><TEMPLATE>{_template(template)}</TEMPLATE></HOST>"
    ).encode()


@dataclass
class Recorder:
    """A LogFn that keeps (severity, message) pairs."""

    records: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, severity: str, message: str) -> None:
        self.records.append((severity, message))

    def messages(self, severity: str | None = None) -> list[str]:
        return [m for s, m in self.records if severity is None or s == severity]
