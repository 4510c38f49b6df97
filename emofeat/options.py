"""Every option declared once: its config field holds the type, default, constraint and help.

A command's options are the fields of one dataclass deriving :class:`Options`, each made with
:func:`option`. From that declaration come

* validation, on construction, in one place: the library (``ExtractConfig(batch_size=0)``), a
  config file and the command line all go through :meth:`Options.__post_init__` (each field's
  type and constraint), then the class's :meth:`Options.check` (rules between fields);
* the command-line flags (:func:`emofeat.cli.common.declared_options`), whose help states the
  declared default;
* config files and records: :func:`resolve` layers defaults < preset < file < flags, and the
  record an artifact writes (:mod:`emofeat.records`) holds the resolved fields;
* the reference documentation (:func:`describe`).

Values from YAML or the command line arrive as text or loose numbers; each field converts what
is unambiguous (``"5e-5"`` — YAML 1.1 reads it as a string — for a float, ``3`` for a float) and
refuses the rest with one line that names the option and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emofeat.errors import EmofeatError

_META = "emofeat.option"


class OptionError(EmofeatError, ValueError):
    """A value an option does not accept; the message names the option and what it accepts."""


@dataclass(frozen=True)
class Spec:
    """What an option accepts, beyond its type. See :func:`option`."""

    help: str
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple[Any, ...] = ()
    rule: Callable[[Any], bool] | None = None
    rule_text: str = ""
    identity: bool = False
    flag: bool = False
    cli: bool = True
    default_text: str | None = None
    path: bool = False

    def names(self) -> tuple[str, ...] | None:
        """The allowed strings (a lazy registry is asked on first use)."""
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)


_REQUIRED = dataclasses.MISSING


def option(
    default: Any = _REQUIRED,
    *,
    help: str,
    choices: Sequence[str] | Callable[[], Iterable[str]] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    special: Sequence[Any] = (),
    rule: Callable[[Any], bool] | None = None,
    rule_text: str = "",
    identity: bool = False,
    flag: bool = False,
    cli: bool = True,
    default_text: str | None = None,
    path: bool = False,
) -> Any:
    """A config field declared as an option.

    Args:
        default: the library's (and so the command line's) default; a list is copied per
            instance. Omitted: the option is required.
        help: one sentence for ``--help``, config files and the reference docs.
        choices: the allowed strings, or a function returning them (a registry that imports
            heavy libraries is asked only when a value is checked or help is shown).
        low, high: the numeric range; ``low_open``/``high_open`` exclude the bound.
        special: values accepted outside the range (``-1``: no limit).
        rule, rule_text: a test for values no range or list describes, and what it accepts.
        identity: the option decides the values an artifact holds (a store's identity): an
            artifact made with another value is not resumed into.
        flag: a boolean spelled ``--x`` alone (no ``--no-x``), for switches whose default is off.
        cli: whether the command line offers it (options only a config file or a library call
            sets, such as a label list).
        default_text: how help states a default that is decided at run time (``None``).
        path: the value may name a local file or folder; an artifact's record holds it
            relative to the record (so that a project folder can move with it).

    Returns:
        A :func:`dataclasses.field` carrying the declaration.
    """
    spec = Spec(
        help=help,
        choices=tuple(choices) if choices is not None and not callable(choices) else choices,
        low=low,
        high=high,
        low_open=low_open,
        high_open=high_open,
        special=tuple(special),
        rule=rule,
        rule_text=rule_text,
        identity=identity,
        flag=flag,
        cli=cli,
        default_text=default_text,
        path=path,
    )
    metadata = {_META: spec}
    if isinstance(default, list | dict):
        template = list(default) if isinstance(default, list) else dict(default)
        return dataclasses.field(default_factory=lambda: template.copy(), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def seed_option(default: int = 0, *, help: str = "Random seed.") -> Any:
    """The seed every command declares the same way (a non-negative integer)."""
    return option(default, help=help, low=0, high=2**32 - 1)


def device_option(default: str = "auto") -> Any:
    """The compute device every command declares the same way."""
    from emofeat.device import DEVICES

    return option(
        default,
        help="auto: the EMOFEAT_DEVICE variable when set, else CUDA when available, else CPU.",
        choices=DEVICES,
    )


def allow_incomplete_option() -> Any:
    """Whether stores whose extraction did not finish may be read (their done rows)."""
    return option(False, help="Use stores whose extraction did not finish.", flag=True)


def flag_name(name: str) -> str:
    """``batch_size`` → ``--batch-size``."""
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------------------------- the fields
@dataclass(frozen=True)
class Declared:
    """One declared option of a config class: its field, type and :class:`Spec`."""

    owner: type  # the config class that declares it
    name: str
    kinds: tuple[type, ...]  # the types a value may have (NoneType for an optional one)
    item: type | None  # the element type of a list option
    spec: Spec
    field: dataclasses.Field

    @property
    def required(self) -> bool:
        return (
            self.field.default is dataclasses.MISSING
            and self.field.default_factory is dataclasses.MISSING
        )

    @property
    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return None if self.required else self.field.default

    @property
    def optional(self) -> bool:
        return type(None) in self.kinds

    @property
    def kind(self) -> type:
        """The value type, ``None`` aside."""
        return next(k for k in self.kinds if k is not type(None))

    def accepts(self) -> str:
        """What the option accepts, in words (``an integer >= 1``, ``one of mean, mean+std``)."""
        spec, kind = self.spec, self.kind
        names = spec.names()
        if names is not None:
            text = "one of " + ", ".join(names)
        elif spec.rule_text:
            text = spec.rule_text
        elif kind is bool:
            text = "true or false"
        elif kind is list:
            text = "a list of " + {int: "integers", float: "numbers"}.get(self.item, "strings")
        else:
            text = _noun(kind)
        if kind in (int, float) or kind is list and self.item in (int, float):
            bounds = []
            if spec.low is not None:
                bounds.append(f"{'>' if spec.low_open else '>='} {_num(spec.low)}")
            if spec.high is not None:
                bounds.append(f"{'<' if spec.high_open else '<='} {_num(spec.high)}")
            if bounds:
                text += " " + " and ".join(bounds)
        if spec.special:
            text += " (or " + ", ".join(map(repr, spec.special)) + ")"
        if self.optional:
            text += ", or null"
        return text

    def convert(self, value: Any) -> Any:
        """``value`` as the field's type, checked against its constraint.

        Raises:
            OptionError: the value is of another type or outside the constraint.
        """
        raw = value
        if value is None:
            if self.optional:
                return None
            raise self._error(raw)
        kind = self.kind
        if kind is list:
            if isinstance(value, str):
                value = [v for v in (s.strip() for s in value.split(",")) if v]
            if not isinstance(value, list | tuple):
                raise self._error(raw)
            value = [self._scalar(v, self.item or str, whole=raw) for v in value]
            for v in value:
                self._within(v, whole=raw)
        else:
            value = self._scalar(value, kind, whole=raw)
            self._within(value, whole=raw)
        if self.spec.rule is not None and not self.spec.rule(value):
            raise self._error(raw)
        return value

    def _scalar(self, value: Any, kind: type, *, whole: Any) -> Any:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise self._error(whole)
        if isinstance(value, bool):  # True is an int to Python, never to an option
            raise self._error(whole)
        if kind is float:
            if isinstance(value, int | float):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(_fraction(value))
                except ValueError:
                    pass
            raise self._error(whole)
        if kind is int:
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value.strip())
                except ValueError:
                    pass
            raise self._error(whole)
        if kind is str:
            if isinstance(value, os.PathLike):  # a folder or file given as a Path
                value = os.fspath(value)
            if isinstance(value, str) and value.strip():
                return value
            raise self._error(whole)
        raise TypeError(f"option {self.name}: unsupported type {kind}")

    def _within(self, value: Any, *, whole: Any) -> None:
        spec = self.spec
        if value in spec.special and not isinstance(value, bool):
            return
        names = spec.names()
        if names is not None and value not in names:
            raise self._error(whole)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise self._error(whole)
            if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
                raise self._error(whole)
            if spec.high is not None and (
                value > spec.high or (spec.high_open and value == spec.high)
            ):
                raise self._error(whole)

    def _error(self, value: Any) -> OptionError:
        return OptionError(f"{flag_name(self.name)} must be {self.accepts()}, got {value!r}")


def _noun(kind: type) -> str:
    return {
        int: "an integer",
        float: "a finite number",
        str: "a non-empty string",
        bool: "true or false",
    }.get(kind, kind.__name__)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _fraction(text: str) -> float:
    """``"1/6"`` or ``"0.25"`` (the reference's soft-vote weights are typed as fractions)."""
    text = text.strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def declared(cls: type) -> list[Declared]:
    """The declared options of a config class, in field order.

    Raises:
        TypeError: a field of ``cls`` was not made with :func:`option`.
    """
    cached = cls.__dict__.get("_declared")
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_META)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with emofeat.options.option")
        hint = hints[f.name]
        args = typing.get_args(hint) if _is_union(hint) else (hint,)
        kinds, item = [], None
        for a in args:
            origin = typing.get_origin(a) or a
            if origin is list:
                (item,) = typing.get_args(a) or (str,)
            kinds.append(origin)
        out.append(Declared(cls, f.name, tuple(kinds), item, spec, f))
    cls._declared = out
    return out


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


class Options:
    """Base of every config class: fields made with :func:`option`, validated on construction.

    A subclass is a ``@dataclass`` (frozen or not); :meth:`check` states the rules between its
    fields. Constructing it converts each value to its field's type and refuses any value its
    constraint does not accept, with an :class:`OptionError` naming the option.
    """

    def __post_init__(self) -> None:
        for d in declared(type(self)):
            object.__setattr__(self, d.name, d.convert(getattr(self, d.name)))
        self.check()

    def check(self) -> None:
        """Rules between fields (a subclass refuses combinations that would mislead)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data (what a record stores and ``--config`` reads back)."""
        return {d.name: _plain(getattr(self, d.name)) for d in declared(type(self))}

    def identity(self) -> dict[str, Any]:
        """The options that decide an artifact's values (declared ``identity=True``)."""
        return {
            d.name: _plain(getattr(self, d.name)) for d in declared(type(self)) if d.spec.identity
        }

    def changed(self, *names: str) -> list[str]:
        """The flags of the options among ``names`` whose value is not their declared default
        (for a message that names what the user gave)."""
        defaults = {d.name: d.default for d in declared(type(self))}
        return [flag_name(n) for n in names if getattr(self, n) != defaults[n]]

    def replace(self, **changes: Any):
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def option_names(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s options, in field order."""
    return tuple(d.name for d in declared(cls))


def identity_keys(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s options declared ``identity=True``."""
    return tuple(d.name for d in declared(cls) if d.spec.identity)


def option_defaults(*classes: type) -> dict[str, Any]:
    """The declared defaults of the options of ``classes`` (what a record written before an
    option existed stands for: that option's default)."""
    return {d.name: _plain(d.default) for cls in classes for d in declared(cls)}


def path_keys(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s options declared ``path=True`` (values that may name local files)."""
    return tuple(d.name for d in declared(cls) if d.spec.path)


# ------------------------------------------------------------------------- files and resolution
def resolve(
    cls: type,
    *,
    given: Mapping[str, Any] | None = None,
    file_values: Mapping[str, Any] | None = None,
    source: str = "",
    preset: Mapping[str, Any] | None = None,
    record: bool = False,
    inputs: Iterable[str] = (),
) -> Any:
    """An instance of ``cls`` from its defaults, then ``preset``, then a config file's values,
    then the options given on the command line or by the caller (``None``: not given).

    Args:
        cls: the config class.
        given: options set explicitly (they win).
        file_values: the mapping a config file holds (see :func:`emofeat.records.read_config`).
        source: the file's name, for messages.
        preset: values a named preset sets (under the file's and the flags').
        record: the file is an artifact's own record: keys that are not options of ``cls``
            (derived values, inputs of other commands) are ignored. A hand-written file's
            unknown keys are refused instead, naming the known ones.
        inputs: names the command takes besides options (``manifest``, ``out``), which a file
            may hold and the caller reads itself.

    Raises:
        OptionError: a value is refused, or a hand-written file names an unknown option.
    """
    names = {d.name for d in declared(cls)}
    inputs = set(inputs)
    file_values = {str(k).replace("-", "_"): v for k, v in (file_values or {}).items()}
    unknown = sorted(set(file_values) - names - inputs)
    if unknown and not record:
        raise OptionError(
            f"{source or 'config'}: unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(names | inputs))}"
        )
    file_values = {k: v for k, v in file_values.items() if k in names}
    by_name = {d.name: d for d in declared(cls)}
    layers = [(preset or {}, ""), (file_values, source), (given or {}, "")]
    values: dict[str, Any] = {}
    for layer, where in layers:
        for key, value in layer.items():
            if key in inputs and key not in names:
                continue
            if key not in by_name:
                raise OptionError(f"unknown option {key!r}; known: {', '.join(sorted(names))}")
            if value is None and layer is not file_values:
                continue  # not given
            try:  # each value is checked where it came from, so a message can name the file
                values[key] = by_name[key].convert(value)
            except OptionError as err:
                raise OptionError(f"{where}: {err}" if where else str(err)) from None
    missing = [flag_name(d.name) for d in declared(cls) if d.required and d.name not in values]
    if missing:
        raise OptionError(f"missing {', '.join(missing)} (give it as a flag or in --config)")
    return cls(**values)


# ------------------------------------------------------------------------------------ help
def help_text(d: Declared) -> str:
    """An option's help with its default (``[default: 32]``)."""
    if d.required:
        default = "required"
    elif d.spec.default_text is not None:
        default = f"default: {d.spec.default_text}"
    elif d.kind is bool:
        default = f"default: {'on' if d.default else 'off'}"
    elif d.default is None:
        default = "default: none"
    elif isinstance(d.default, list):
        default = "default: " + ",".join(map(str, d.default))
    else:
        default = f"default: {d.default}"
    return f"{d.spec.help} [{default}]"


def given_options(cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The declared options of ``cls`` among a command's parameters that were given (not None)."""
    names = {d.name for d in declared(cls)}
    return {k: v for k, v in params.items() if k in names and v is not None}


def describe(cls: type) -> list[dict[str, str]]:
    """One row per option for the reference docs: flag, accepted values, default, help."""
    rows = []
    for d in declared(cls):
        rows.append(
            {
                "option": flag_name(d.name) if d.spec.cli else d.name,
                "accepts": d.accepts(),
                "default": help_text(d).rsplit("[", 1)[1].rstrip("]"),
                "help": d.spec.help,
                "identity": "yes" if d.spec.identity else "",
            }
        )
    return rows
