"""Reference pages generated from the code: the documentation site's build calls these, so the
pages cannot drift from what the commands, option declarations and registries say.

Each function returns one Markdown page. ``docs/hooks.py`` adds them to the site under
``reference/`` when ``mkdocs build`` runs; ``tests/test_docs.py`` checks that every command and
every option appears in them.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

PAGES = {
    "reference/commands.md": "commands_page",
    "reference/config-files.md": "config_files_page",
    "reference/presets.md": "presets_page",
    "reference/encoders.md": "encoders_page",
    "reference/meta-learners.md": "meta_learners_page",
}


def _cell(text: object) -> str:
    """Text fit for one Markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def walk_commands(
    command: click.Command, path: tuple[str, ...] = ("emofeat",)
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the command tree, depth first, groups before their subcommands.

    Args:
        command: The root command (``emofeat.cli.main``) or any group below it.
        path: The words that invoke ``command``.

    Yields:
        ``(path, command)`` pairs; ``path`` is the words typed to invoke the command.
    """
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk_commands(command.commands[name], (*path, name))


def _option_rows(command: click.Command, ctx: click.Context) -> list[list[object]]:
    rows = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            rows.append([f"`{param.human_readable_name}`", "argument", ""])
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        flags, help_ = record
        rows.append([f"`{flags}`", help_, "yes" if _is_identity(param) else ""])
    return rows


def _is_identity(param: click.Parameter) -> bool:
    declared = getattr(param, "declared_option", None)
    return bool(declared is not None and declared.spec.identity)


def commands_page() -> str:
    """The command reference: every command with its usage, help and options.

    Returns:
        A Markdown page: one section per command of ``emofeat``, with each option's flags,
        value, default and help as ``--help`` prints them, and whether the option is part of
        an output's identity (a store or run made with another value is refused, not reused).
    """
    from emofeat.cli import main

    parts = [
        "# Commands",
        "",
        "Generated from the command-line code; `emofeat COMMAND --help` prints the same. "
        "*Identity* marks an option whose value decides an output's contents: resuming or "
        "reading an output made with another value is refused (see "
        "[Guarantees](../explanation/guarantees.md)).",
        "",
    ]
    contexts: dict[tuple[str, ...], click.Context] = {}
    for path, command in walk_commands(main):
        parent = contexts.get(path[:-1])
        ctx = click.Context(command, info_name=path[-1], parent=parent)
        contexts[path] = ctx
        level = "#" * min(len(path) + 1, 4)
        parts += [f"{level} `{' '.join(path)}`", ""]
        parts += [command.help or "", ""]
        usage = " ".join(command.collect_usage_pieces(ctx))
        parts += [f"```\n{' '.join(path)} {usage}\n```", ""]
        rows = _option_rows(command, ctx)
        if rows:
            parts += [_table(["Option", "Help", "Identity"], rows), ""]
    return "\n".join(parts)


def config_classes() -> list[type]:
    """Every option-declaring config class of the package, by module then name.

    Returns:
        The :class:`~emofeat.options.Options` subclasses (their modules imported first).
    """
    import importlib
    import pkgutil

    import emofeat
    from emofeat.options import Options

    # Every step declares its options in a module named ``config``; importing them registers
    # their classes as Options subclasses.
    for info in pkgutil.walk_packages(emofeat.__path__, "emofeat."):
        if info.name.rsplit(".", 1)[-1] == "config":
            importlib.import_module(info.name)
    found: list[type] = []
    todo = list(Options.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(found), key=lambda c: (c.__module__, c.__name__))


def config_files_page() -> str:
    """The keys a ``--config`` YAML file takes, per config class.

    Returns:
        A Markdown page with one table per config class: key, accepted values, default, help,
        identity.
    """
    from emofeat.options import describe

    parts = [
        "# Config files",
        "",
        "Every command that takes `--config FILE.yaml` reads the keys below (the option's name "
        "with underscores); flags given on the command line override the file. The record a "
        "command writes beside its output is such a file: `--config RUN/config.yaml` re-runs "
        "the command unchanged. Keys without a flag are set in files only. Generated from the "
        "option declarations.",
        "",
    ]
    for cls in config_classes():
        rows = describe(cls)
        if not rows:
            continue
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        parts += [f"## `{cls.__name__}`", "", f"`{cls.__module__}`: {' '.join(doc.split())}", ""]
        table = [
            [f"`{name}`", r["option"] if r["option"] != name else "-", r["accepts"], r["default"]]
            + [r["help"], r["identity"]]
            for r in rows
            for name in [_key(r["option"])]
        ]
        parts += [_table(["Key", "Flag", "Accepts", "Default", "Help", "Identity"], table), ""]
    return "\n".join(parts)


def _key(option: str) -> str:
    return option[2:].replace("-", "_") if option.startswith("--") else option


def presets_page() -> str:
    """The fine-tuning presets and the options each sets.

    Returns:
        A Markdown page: one section per preset of ``emofeat finetune --preset``.
    """
    from emofeat.recipes.presets import PRESETS, SUMMARIES

    parts = [
        "# Presets",
        "",
        "`emofeat finetune --preset NAME` fills the options below; flags and `--config` "
        "override them. Generated from `emofeat/recipes/presets.py`.",
        "",
    ]
    for name, values in PRESETS.items():
        rows = [[f"`{k}`", f"`{v}`"] for k, v in values.items()]
        parts += [f"## `{name}`", "", SUMMARIES[name], "", _table(["Option", "Value"], rows), ""]
    return "\n".join(parts)


def encoders_page() -> str:
    """The encoder families: what each loads and how its inputs are fed.

    Returns:
        A Markdown page with one section per registered family (``emofeat models list``).
    """
    from emofeat.extract.opensmile import model_table

    parts = [
        "# Encoder families",
        "",
        "`--model` takes a short name below or a local folder in the Hugging Face format "
        "(`--model-path`); the folder's `config.json` names a `model_type`, and the family that "
        "lists it loads the model. Generated from the family registry "
        "(`emofeat models list` prints the same).",
        "",
    ]
    for row in model_table():
        parts += [f"## `{row['family']}` ({row['modality']})", "", row["inputs"], ""]
        parts += [
            _table(
                ["", ""],
                [
                    ["model types", row["model_types"]],
                    ["short names", row["short_names"]],
                    ["a local folder holds", row["needs"]],
                ],
            ),
            "",
        ]
    return "\n".join(parts)


def meta_learners_page() -> str:
    """The meta-learners of ``emofeat stack --meta``.

    Returns:
        A Markdown page: one section per registered meta-learner with what it reads and the
        hyperparameter grid nested cross-validation chooses from.
    """
    from emofeat.stack import meta

    parts = [
        "# Meta-learners",
        "",
        "`emofeat stack --meta NAME`; `--meta auto` picks the one of softvote, caruana, logreg "
        "and lgbm with the best nested cross-validated accuracy over the train folds. Each is a "
        "scikit-learn estimator. Generated from the registry in `emofeat/stack/meta.py` "
        "(`emofeat stack --list-meta` prints the same).",
        "",
    ]
    for name, m in meta.META_LEARNERS.items():
        grid = "; ".join(f"`{k}`: {', '.join(map(str, v))}" for k, v in m.grid.items()) or "-"
        rows = [
            ["reads", m.inputs],
            ["learns from level-1 rows", "yes" if m.learns else "no"],
            ["grid", grid],
        ]
        parts += [f"## `{name}`", "", m.summary, "", _table(["", ""], rows), ""]
    return "\n".join(parts)


def page(name: str) -> str:
    """One generated page by its path in the site.

    Args:
        name: A key of :data:`PAGES` (``reference/commands.md``, ...).

    Returns:
        The page's Markdown.

    Raises:
        KeyError: ``name`` is not a generated page.
    """
    return globals()[PAGES[name]]()
