"""Objects on the wire: compact JSON, as the real server sends it, encoded in one place."""

from __future__ import annotations

import json
from typing import Any


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
