"""Every option is declared once, in its config class: each field has a constraint, refuses what
it does not accept with one line naming the option and what it accepts, and the command line's
defaults are the library's."""

import dataclasses
import importlib
import math
import pkgutil

import click
import pytest
import yaml
from click.testing import CliRunner

import emofeat
from emofeat.cli import main
from emofeat.options import OptionError, Options, declared, flag_name, option_names, resolve


def config_classes() -> list[type]:
    """Every subclass of Options in the package (found by importing each module)."""
    for info in pkgutil.walk_packages(emofeat.__path__, "emofeat."):
        if not info.name.endswith("__main__"):  # (runs the command line)
            importlib.import_module(info.name)
    found, todo = set(), list(Options.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("emofeat.") and cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: c.__qualname__)


CLASSES = config_classes()


def test_every_command_step_has_its_config_class():
    names = {c.__name__ for c in CLASSES}
    expected = {"FinetuneConfig", "ExtractConfig", "FuseConfig", "MMMConfig", "StackConfig"}
    expected |= {"PrepareConfig", "SynthConfig", "ProbeConfig", "PlotConfig", "ExportConfig"}
    expected |= {"TinyConfig", "DemoConfig", "RecipeConfig", "InferConfig", "PredictConfig"}
    assert expected <= names


def required_values(cls) -> dict:
    return {d.name: d.spec.names()[0] for d in declared(cls) if d.required}


def invalid_values(d) -> list:
    """Values the declaration must refuse, derived from the declaration itself."""
    kind, spec = d.kind, d.spec
    out = [object()]  # no option takes an arbitrary object
    if not d.optional:
        out.append(None)
    names = spec.names()
    if names is not None:
        out.append("not-" + names[0])
    if kind is bool:
        out += ["maybe", 2]
    if kind in (int, float):
        out += [True, "many", math.nan]  # a bool is not a number here; NaN is no value
        if kind is int:
            out.append(1.5)
        if spec.low is not None:
            below = spec.low if spec.low_open else spec.low - 1
            if below not in spec.special:
                out.append(int(below) if kind is int else below)
        if spec.high is not None:
            above = spec.high if spec.high_open else spec.high + 1
            out.append(int(above) if kind is int else above)
    if kind is str and names is None:
        out += ["", 5]
    if kind is list:
        out += [5, [object()]]
    return out


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_option_refuses_what_it_does_not_accept(cls):
    base = required_values(cls)
    cls(**base)  # the defaults are accepted
    for d in declared(cls):
        assert d.spec.help.strip(), f"{cls.__name__}.{d.name} has no help"
        if d.kind in (int, float):  # a count or rate states its range
            assert d.spec.low is not None or d.spec.high is not None, f"{cls.__name__}.{d.name}"
        values = invalid_values(d)
        for value in values:
            with pytest.raises(OptionError) as info:
                cls(**{**base, d.name: value})
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"{flag_name(d.name)} must be {d.accepts()}, got "), message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_option_takes_its_default_and_text_as_a_file_writes_it(cls):
    """A value read from YAML or the command line (text) reaches the same field value."""
    base = required_values(cls)
    ref = cls(**base)
    for d in declared(cls):
        value = getattr(ref, d.name)
        if value is None or d.kind is bool:
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        assert getattr(cls(**{**base, d.name: text}), d.name) == value, d.name


def test_files_and_flags_resolve_in_order_and_unknown_keys_are_refused(tmp_path):
    from emofeat.finetune.config import FinetuneConfig, resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-5\nepochs: 2\nbatch-size: 8\n")  # 5e-5 is a string to YAML 1.1
    cfg = resolve_config("kobert-ref", path, epochs=4)
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (
        5e-5,
        4.0,
        8,
    )  # file over preset, flag over file
    assert cfg.weight_decay == 0.01 and cfg.scheduler == "cosine"  # from the preset
    path.write_text("lr: 0\n")
    with pytest.raises(
        OptionError, match=r"c\.yaml: --lr must be a finite number > 0 and <= 10, got 0"
    ):
        resolve_config(None, path)
    # A record's keys beyond the options (derived values) are not typos; a hand-written file's are.
    values = {"lr": 0.1, "family": "kobert"}
    assert resolve(FinetuneConfig, file_values=values, record=True).lr == 0.1
    with pytest.raises(OptionError, match="unknown option.*family"):
        resolve(FinetuneConfig, file_values=values, source="c.yaml")


def declared_commands():
    """(command path, command, its declared flags) for every command with declared options."""
    todo = [((), main)]
    while todo:
        path, cmd = todo.pop()
        if isinstance(cmd, click.Group):
            todo += [((*path, n), c) for n, c in cmd.commands.items()]
            continue
        flags = [p for p in cmd.params if hasattr(p, "declared_option")]
        if flags:
            yield path, cmd, flags


def test_command_line_defaults_are_the_librarys():
    commands = list(declared_commands())
    assert len(commands) >= 14
    for path, cmd, flags in commands:
        owners = {p.declared_option.owner for p in flags}
        for p in flags:
            # Not given on the command line: the config class's default decides (or the file's).
            assert p.default is None, (path, p.name)
            assert p.name == p.declared_option.name
        for owner in owners:  # every command-line option of the class is a flag of the command
            names = {d.name for d in declared(owner) if d.spec.cli}
            assert names <= {p.name for p in flags}, (path, owner)
        if any(p.name == "print_config" for p in cmd.params):
            args = [*path]
            for owner in owners:
                for d in declared(owner):
                    if d.required:
                        args += [flag_name(d.name), d.spec.names()[0]]
            result = CliRunner().invoke(main, [*args, "--print-config"])
            assert result.exit_code == 0, (path, result.output)
            printed = list(yaml.safe_load_all(result.output.replace("\n\n", "\n---\n")))
            merged = {k: v for doc in printed for k, v in doc.items()}
            # Options of alternative classes (fuse: MMM's or the layer-sum head's, chosen by
            # --model): the chosen one's are printed, with its own defaults.
            alternatives = {a.owner for p in flags for a in getattr(p, "alternatives", {}).values()}
            chosen = [o for o in alternatives if set(option_names(o)) <= set(merged)]
            assert len(chosen) == (1 if alternatives else 0), path
            for owner in (owners - alternatives) | set(chosen):
                ref = owner(**required_values(owner)).to_dict()
                assert {k: merged[k] for k in ref} == ref, path


def test_a_refused_flag_is_one_line_naming_the_option():
    result = CliRunner().invoke(main, ["extract", "--batch-size", "0", "--print-config"])
    assert result.exit_code == 2
    assert (
        result.output.strip() == "error: --batch-size must be an integer >= 1 and <= 65536, got '0'"
    )


def test_print_config_re_runs_through_config(tmp_path):
    """What --print-config prints is a config file the command takes back unchanged."""
    args = ["finetune", "--preset", "kobert-ref", "--epochs", "2", "--select", "inner"]
    printed = CliRunner().invoke(main, [*args, "--print-config"]).output
    (tmp_path / "c.yaml").write_text(printed)
    again = CliRunner().invoke(
        main, ["finetune", "--config", str(tmp_path / "c.yaml"), "--print-config"]
    )
    assert again.exit_code == 0 and again.output == printed


def test_fields_are_all_declared():
    for cls in CLASSES:
        assert {f.name for f in dataclasses.fields(cls)} == {d.name for d in declared(cls)}
