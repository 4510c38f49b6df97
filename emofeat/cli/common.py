"""What the commands share: common options, --config handling, one-line errors."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from emofeat.errors import EmofeatError
from emofeat.options import Declared, declared, flag_name, help_text

# Options shared by several commands.
manifest_option = click.option("--manifest", type=click.Path(path_type=Path))
config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML options, or the record an earlier run wrote beside its output (it re-runs the "
    "command unchanged); flags override it.",
)

print_config_option = click.option(
    "--print-config", is_flag=True, help="Print the resolved options as YAML and exit."
)


def show_config(cfg) -> None:
    """Print a config's options as the YAML a ``--config`` file takes."""
    from emofeat.records import dump_yaml

    click.echo(dump_yaml(cfg.to_dict()), nl=False)


def resolve_declared(
    cls: type, params: dict, config_file: Path | None, *, inputs: Sequence[str] = ()
) -> tuple[object, dict]:
    """The config ``cls`` from a command's flags over its ``--config`` file (see
    :func:`emofeat.options.resolve`), and the file's values of the command's ``inputs``."""
    from emofeat.options import given_options, resolve
    from emofeat.records import read_config

    values, is_record = read_config(config_file) if config_file else ({}, False)
    cfg = resolve(
        cls,
        given=given_options(cls, params),
        file_values=values,
        source=str(config_file or ""),
        record=is_record,
        inputs=inputs,
    )
    return cfg, {k: values[k] for k in inputs if values.get(k) is not None}


def need(params: dict, *names: str) -> None:
    missing = [n for n in names if params.get(n) in (None, ())]
    if missing:
        raise click.UsageError(
            "missing "
            + ", ".join("--" + n.replace("_", "-") for n in missing)
            + " (give it on the command line or in --config)"
        )


def stores_and_out(stores, out, inputs: dict, config_file) -> tuple[list[Path], Path]:
    """The input stores and the output folder of a command over stores (stack, fuse): from the
    flags, else from ``--config``; re-running a folder's own record (``--config
    FOLDER/config.yaml``) writes into that folder."""
    from emofeat.records import record_folder

    stores = stores or [Path(p) for p in inputs.get("stores", [])]
    out = out or inputs.get("out")
    if not out and inputs.get("stores"):
        out = record_folder(config_file)
    need({"stores": stores, "out": out}, "stores", "out")
    return list(stores), Path(out)


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
            + ", ".join(
                f"{k} {met[k]:.4f}" for k in ("accuracy", "macro_f1", "uar", "mean_ccc") if k in met
            )
        )
    if summary:
        click.echo(
            "held-out folds: "
            + ", ".join(
                f"{k} {v['mean']:.4f} ± {v['std']:.4f}" for k, v in summary.items() if k != "loss"
            )
        )


class DeclaredOption(click.Option):
    """A flag made from a declared option: its metavar and help come from the declaration,
    computed when help is shown (a lazy registry such as the meta-learners is not imported at
    start). Its click default is ``None`` (not given) so that a preset and ``--config`` can fill
    it; the value reaches the config class as typed, and is checked there."""

    def __init__(
        self,
        *args,
        declared_option: Declared,
        alternatives: dict[str, Declared] | None = None,
        of: int = 1,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.declared_option = declared_option
        self.alternatives = alternatives or {}
        self.of = of  # how many classes share the flags: an option of fewer says whose it is

    def get_help_record(self, ctx):
        d = self.declared_option
        texts = {label: help_text(a) for label, a in self.alternatives.items()}
        if len(set(texts.values())) > 1:  # declared differently by each: say each one's
            self.help = " ".join(f"{label}: {text}" for label, text in texts.items())
        elif texts and len(texts) < self.of:
            self.help = f"{', '.join(texts)} only: {help_text(d)}"
        else:
            self.help = help_text(d)
        if d.kind is not bool:
            names = d.spec.names()
            kinds = {int: "INTEGER", float: "NUMBER", list: "LIST"}
            self.metavar = "[" + "|".join(names) + "]" if names else kinds.get(d.kind, "TEXT")
        return super().get_help_record(ctx)


def alternative_options(classes: dict[str, type], *, exclude: Sequence[str] = ()) -> Callable:
    """A decorator adding one flag per command-line option that any of ``classes`` declares
    (keyed by what chooses the class, e.g. ``{"mmm": MMMConfig, "layer-sum": ...}``); an
    option several declare is one flag whose help gives each one's default and help where they
    differ (they must agree on its type). The command builds the chosen class from the flags
    given (:func:`foreign_options` refuses the others')."""
    by_name: dict[str, dict[str, Declared]] = {}
    for label, cls in classes.items():
        for d in declared(cls):
            if d.spec.cli and d.name not in set(exclude):
                by_name.setdefault(d.name, {})[label] = d
    for name, found in by_name.items():
        kinds = {d.kind for d in found.values()}
        if len(kinds) > 1:
            raise TypeError(f"option {name!r} is declared with several types: {kinds}")

    def decorate(fn: Callable) -> Callable:
        for name in reversed(list(by_name)):
            found = by_name[name]
            d = next(iter(found.values()))
            flag = flag_name(name)
            if d.kind is bool and d.spec.flag:
                decls, extra = [flag], {"is_flag": True}
            elif d.kind is bool:
                decls, extra = [f"{flag}/--no-{flag[2:]}"], {}
            else:
                decls, extra = [flag], {"type": click.STRING}
            option = click.option(
                *decls,
                name,
                cls=DeclaredOption,
                declared_option=d,
                alternatives=found if len(classes) > 1 else None,
                of=len(classes),
                default=None,
                **extra,
            )
            fn = option(fn)
        return fn

    return decorate


def foreign_options(chosen: type, classes: dict[str, type], params: dict, label: str) -> None:
    """Refuse flags given for another of ``classes`` than ``chosen`` (named by ``label``)."""
    from emofeat.options import option_names

    mine = set(option_names(chosen))
    others = {n for cls in classes.values() for n in option_names(cls)} - mine
    given = sorted(n for n in others if params.get(n) is not None)
    if given:
        flags = ", ".join(flag_name(n) for n in given)
        raise click.UsageError(f"{flags}: not an option of {label}")


def declared_options(cls: type, *, exclude: Sequence[str] = ()) -> Callable:
    """A decorator adding one flag per command-line option that ``cls`` declares (field order);
    ``--x/--no-x`` for a boolean, ``--x`` alone for one declared ``flag=True``."""
    return alternative_options({cls.__name__: cls}, exclude=exclude)
