"""The documentation: the generated reference covers every command and option, the example
script runs and agrees with emofeat's reader, the version lives in one place, and nothing in
the repository points outside it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import emofeat
from emofeat import docs
from emofeat.store import Provenance, StoreLayout, create_store, open_store

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_and_option_is_in_the_generated_reference():
    from emofeat.cli import main

    page = docs.commands_page()
    config_page = docs.config_files_page()
    for path, command in docs.walk_commands(main):
        assert f"`{' '.join(path)}`" in page, path
        for param in command.params:
            for flag in param.opts + param.secondary_opts:
                if param.param_type_name == "option" and not param.hidden:
                    assert flag in page, (path, flag)
    for cls in docs.config_classes():
        from emofeat.options import declared

        for d in declared(cls):
            assert f"`{d.name}`" in config_page, (cls.__name__, d.name)


def test_every_preset_encoder_family_and_meta_learner_has_its_section():
    from emofeat.encoders import families
    from emofeat.recipes.presets import PRESETS
    from emofeat.stack.meta import META_LEARNERS

    for name in PRESETS:
        assert f"## `{name}`" in docs.presets_page()
    for name in families():
        assert f"## `{name}` (" in docs.encoders_page()
    for name in META_LEARNERS:
        assert f"## `{name}`" in docs.meta_learners_page()


def test_a_generated_page_is_found_by_its_site_path():
    for name in docs.PAGES:
        assert docs.page(name).startswith("# ")
    with pytest.raises(KeyError):
        docs.page("reference/nothing.md")


def _small_store(path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 40
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    fold = np.where(split == "test", -1, np.arange(n) % 2)
    in_sample = np.zeros(n, bool)
    in_sample[[1, 2]] = True  # two train rows a model saw: not out-of-fold
    layout = StoreLayout(
        ids=[f"u{i:03d}" for i in range(n)],
        labels=np.r_[-1, rng.integers(0, 3, n - 1)],
        split=list(split),
        fold=fold,
        label_names=["angry", "happy", "sad"],
        embeddings={"last": 6},
        in_sample=in_sample,
        config={"model": "x"},
    )
    w = create_store(path, layout, attrs=Provenance(model_id="x", out_of_fold=True).to_attrs())
    done = np.arange(n - 3)  # three rows never computed
    w.write(
        done,
        logits=rng.normal(size=(len(done), 3)),
        embeddings={"last": rng.normal(size=(len(done), 6))},
    )
    w.finalize()


def test_the_example_script_reads_a_store_as_emofeat_does(tmp_path):
    path = tmp_path / "s.h5"
    _small_store(path)
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "read_store.py"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(r.stdout.strip().splitlines()[-1])
    with open_store(path) as s:
        usable = s.done & (s.labels >= 0)
        train = usable & (s.split == "train") & ~s.in_sample
        test = usable & (s.split == "test")
        pred = s.logits().argmax(1)
        assert got["rows"] == len(s) and got["embedding_width"] == 6
        assert got["train_out_of_fold"] == train.sum() and got["test"] == test.sum()
        assert got["accuracy"]["train_out_of_fold"] == pytest.approx(
            (pred == s.labels)[train].mean()
        )
        assert got["accuracy"]["test"] == pytest.approx((pred == s.labels)[test].mean())


def test_the_version_lives_in_one_place_and_heads_the_changelog():
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[?(\d+\.\d+\.\d+)\]?", changelog, re.M)
    assert first and first.group(1) == emofeat.__version__
    from click.testing import CliRunner

    from emofeat.cli import main

    out = CliRunner().invoke(main, ["--version"]).output
    assert emofeat.__version__ in out
    hits = subprocess.run(
        ["git", "grep", "-n", "-F", f'"{emofeat.__version__}"', "--", "*.py", "*.cfg", "*.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert [h.split(":")[0] for h in hits] == ["emofeat/__init__.py"], hits


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(
        ["git", "grep", "--untracked", "-n", "-I", "-E", r"\.\./shared|\.\./\.\./"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    # This test's own pattern is the only hit allowed.
    assert [t for t in tracked if not t.startswith("tests/test_docs.py:")] == []


def test_readme_stays_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def api_objects() -> list[tuple[str, object]]:
    """Every function, class and listed member that docs/reference/api.md renders."""
    import importlib

    import yaml

    text = (ROOT / "docs" / "reference" / "api.md").read_text(encoding="utf-8")
    found = []
    for m in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", text, re.M):
        module, _, name = m.group(1).rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        found.append((m.group(1), obj))
        opts = yaml.safe_load(m.group(2).replace("    ", "", 1)) if m.group(2).strip() else None
        members = ((opts or {}).get("options") or {}).get("members")
        if isinstance(members, list):
            for member in members:
                found.append((f"{m.group(1)}.{member}", getattr(obj, member)))
    return found


def docstring_gaps(name: str, obj: object) -> list[str]:
    """What a public API object's Google-style docstring lacks: Args for every parameter,
    Returns for a function that returns something, Raises for one that raises."""
    import ast
    import inspect
    import textwrap
    from functools import cached_property

    if isinstance(obj, property | cached_property):
        fget = obj.fget if isinstance(obj, property) else obj.func
        return [] if (fget.__doc__ or "").strip() else [f"{name}: no docstring"]
    func = getattr(obj, "__func__", obj)
    doc = inspect.getdoc(func) or ""
    if not doc.strip():
        return [f"{name}: no docstring"]
    if inspect.isclass(func):
        return []
    gaps = []
    sig = inspect.signature(func)
    params = [p for p in sig.parameters if p not in ("self", "cls")]
    args = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    for p in params:
        if not re.search(rf"^\s+\**{p}\b", args, re.M):
            gaps.append(f"{name}: argument {p} not in Args")
    ret = sig.return_annotation
    if (
        ret not in (None, "None", inspect.Signature.empty)
        and "Returns:" not in doc
        and "Yields:" not in doc
    ):
        gaps.append(f"{name}: no Returns")
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))

    def raises_in(node: ast.AST) -> bool:  # its own raise statements, not nested functions'
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Raise) and child.exc is not None or raises_in(child):
                return True
        return False

    raises = raises_in(tree.body[0])
    if raises and "Raises:" not in doc:
        gaps.append(f"{name}: raises, but no Raises")
    return gaps


def test_every_public_api_function_documents_args_returns_and_raises():
    gaps = [g for name, obj in api_objects() for g in docstring_gaps(name, obj)]
    assert not gaps, "\n".join(gaps)
