"""What the commands share: common options, --config handling, one-line errors."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from emofeat.device import DEVICES
from emofeat.errors import EmofeatError

# Options shared by several commands.
model_path_option = click.option(
    "--model-path", type=click.Path(path_type=Path), help="Local copy of the named hub model."
)
manifest_option = click.option("--manifest", type=click.Path(path_type=Path))
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML options, or the record an earlier run wrote beside its output (it re-runs the "
    "command unchanged); flags override it.",
)


def configured(params: dict, *, ignore=(), rename=None, out_beside: str | None = None) -> dict:
    """The command's parameters completed from ``--config``; ``out_beside``: a record with this
    file name (``config.yaml``) lives in the output folder, which is then the default --out."""
    from emofeat.configfile import apply_config

    ctx = click.get_current_context()
    config_file = params.get("config_file")
    params = apply_config(ctx, config_file, params, ignore=ignore, rename=rename)
    if out_beside and config_file and not params.get("out") and config_file.name == out_beside:
        params["out"] = config_file.parent
    return params


def need(params: dict, *names: str) -> None:
    missing = [n for n in names if params.get(n) in (None, ())]
    if missing:
        raise click.UsageError(
            "missing "
            + ", ".join("--" + n.replace("_", "-") for n in missing)
            + " (give it on the command line or in --config)"
        )


def friendly(fn):
    """Print user-caused failures as one clear message and exit 2, not a traceback: emofeat's
    own errors, and what the system says about files (missing, permissions, disk full). With
    ``-v`` the traceback is shown too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (EmofeatError, OSError) as err:
            if verbose():
                raise
            if isinstance(err, OSError) and not isinstance(err, EmofeatError):
                where = f"{err.filename}: " if err.filename else ""
                text = f"{where}{err.strerror or err}"
                if err.errno == errno.ENOSPC:
                    text += " (free some space, then re-run the same command: it resumes)"
            else:
                text = str(err)
            click.secho(f"error: {text}", fg="red", err=True)
            sys.exit(2)

    return wrapper


def fields(values) -> str:
    """``key value, key value`` for a report dict (nested dicts as key=value lists)."""
    if not isinstance(values, dict):
        return str(values)
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{str(key).replace('_', ' ')} {value}")
    return ", ".join(parts)


def verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("verbose"))


class VerboseAnywhere(click.Group):
    """``-v``/``--verbose`` is accepted after the subcommand too (``emofeat stack ... -v``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            head, tail = args[: args.index("--")], args[args.index("--") :]
        else:
            head, tail = args, []
        flags = [a for a in head if a in ("-v", "--verbose")]
        rest = [a for a in head if a not in ("-v", "--verbose")]
        return super().parse_args(ctx, flags[:1] + rest + tail)


def print_folds(results: dict, summary: dict) -> None:
    """Each fold's held-out figures and their mean ± std."""
    for fold, met in results.items():
        click.echo(
            f"fold {fold}: "
            + ", ".join(f"{k} {met[k]:.4f}" for k in ("accuracy", "macro_f1", "uar") if k in met)
        )
    if summary:
        click.echo(
            "held-out folds: "
            + ", ".join(
                f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary.items() if k != "loss"
            )
        )


allow_incomplete_option = click.option(
    "--allow-incomplete", is_flag=True, help="Use stores whose extraction did not finish."
)
device_option = click.option(
    "--device", default="auto", show_default=True, type=click.Choice(list(DEVICES))
)


class LazyChoice(click.Choice):
    """A choice among names computed on first use (a registry whose module imports heavy
    libraries: the meta-learners' import scikit-learn and LightGBM, 0.9 s that every command
    paid at start)."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load, self._names = load, None
        super().__init__([])

    @property
    def choices(self) -> Sequence[str]:
        if self._names is None:
            self._names = tuple(self._load())
        return self._names

    @choices.setter
    def choices(self, value) -> None:  # click.Choice.__init__ assigns; the loader decides
        pass


class LazyHelpOption(click.Option):
    """An option whose help text is computed when help is shown (see :class:`LazyNames`)."""

    def __init__(self, *args, help_text: Callable[[], str], **kwargs):
        super().__init__(*args, **kwargs)
        self._help_text = help_text

    def get_help_record(self, ctx):
        self.help = self._help_text()
        return super().get_help_record(ctx)
