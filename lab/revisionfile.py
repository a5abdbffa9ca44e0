"""A lab control-plane process's word on how far it has acted: one resourceVersion in a
file, replaced whole. The EndpointSlice controller and the cluster DNS write theirs;
`podwire lab apply` reads them as it reads the agents' revisions."""

from __future__ import annotations

import os
from pathlib import Path


def write_revision(path: Path, revision: int) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(f"{revision}\n")
    os.replace(partial, path)


def read_revision(path: Path) -> int | None:
    """What the process has acted on up to; None when it has not said yet."""
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
