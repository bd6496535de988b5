"""Configuration errors and YAML reading, shared by the node and the training configs.

Both ``dicom_node.config`` and ``training.config`` validate YAML with pydantic; admins and users
should read the same ``key: problem`` lines from either (``node.port: must be an integer
1-65535, got 'notaport'``), so the error type, the YAML reading and the formatting of a
pydantic error live here, below both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one ``key: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def read_yaml(path: Path | str) -> Any:
    """A YAML file's content; unreadable files and bad YAML are :class:`ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file ({exc.strerror})"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None


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
