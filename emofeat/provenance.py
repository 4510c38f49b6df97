"""What every artifact records about how it was made: config, seed, emofeat version."""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any

import yaml

from emofeat import __version__


def provenance(config: dict[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """A dict describing the artifact's origin, to be saved beside it."""
    return {
        "emofeat_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seed": seed,
        "config": config or {},
    }


def dump_yaml(data: Any) -> str:
    """YAML text of plain data, keys in insertion order, Unicode kept readable."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
