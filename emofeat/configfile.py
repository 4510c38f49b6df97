"""One config convention for every command: ``--config FILE.yaml`` plus flags that override it.

A config file is a YAML mapping of option names (as the command's flags, ``-`` or ``_``), or an
artifact's own record — a run's ``config.yaml``, a stack's ``config.yaml``, a store's ``.yaml``,
a manifest's sidecar — whose ``config`` section holds the resolved options beside provenance.
Each command writes that record beside its output, so the written file re-runs the command
unchanged: ``emofeat finetune --config runs/kobert-p05/config.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from emofeat.errors import EmofeatError


def read_options(path: str | os.PathLike) -> dict[str, Any]:
    """The options of a config file (its ``config`` section when it is an artifact record)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise EmofeatError(f"{path}: not valid YAML ({err})") from None
    except OSError as err:
        raise EmofeatError(f"{path}: cannot read the config ({err.strerror})") from None
    if not isinstance(data, dict):
        raise EmofeatError(f"{path}: expected a mapping of options")
    if isinstance(data.get("config"), dict) and "emofeat_version" in data:
        data = data["config"]
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def apply_config(
    ctx, config_file: Path | None, params: dict[str, Any], *, ignore=(), rename=None
) -> dict[str, Any]:
    """``params`` of a click command with values from ``config_file`` for every option not given
    on the command line (flags win). Keys in ``ignore`` (derived values an artifact records) are
    skipped, ``rename`` maps a record's key to the parameter's name; any other unknown key is an
    error."""
    import click
    from click.core import ParameterSource

    if not config_file:
        return params
    options = {(rename or {}).get(k, k): v for k, v in read_options(config_file).items()}
    by_name = {p.name: p for p in ctx.command.params}
    unknown = sorted(k for k in options if k not in by_name and k not in ignore)
    if unknown:
        raise EmofeatError(
            f"{config_file}: unknown option(s) {unknown}; known: {sorted(n for n in by_name if n != 'config_file')}"
        )
    out = dict(params)
    for key, value in options.items():
        if key in ignore or key not in by_name or value is None:
            continue
        if ctx.get_parameter_source(key) in (
            ParameterSource.COMMANDLINE,
            ParameterSource.ENVIRONMENT,
        ):
            continue
        try:
            out[key] = by_name[key].type_cast_value(ctx, value)
        except click.BadParameter as err:
            raise EmofeatError(f"{config_file}: option {key!r}: {err.format_message()}") from None
    return out
