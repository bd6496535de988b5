"""One wording for configuration errors, shared by the node and the training configs.

Both ``dicom_node.config`` and ``training.config`` validate YAML with pydantic; admins and users
should read the same ``key: problem`` lines from either (``node.port: must be an integer
1-65535, got 'notaport'``), so the formatting of a pydantic error lives here, below both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_validation_error(err: Mapping[str, Any]) -> str:
    """``dotted.key[index]: message`` for one entry of ``ValidationError.errors()``."""
    key = ""
    for part in err["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    msg = err["msg"]
    if err["type"] == "value_error":
        msg = str(err["ctx"]["error"])
    elif err["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling and indentation)"
    elif err["type"] == "missing":
        msg = "is required"
    elif "input" in err and not isinstance(err["input"], dict):
        msg = f"{msg[0].lower()}{msg[1:]}, got {err['input']!r}"
    return f"{key or '<top level>'}: {msg}"
