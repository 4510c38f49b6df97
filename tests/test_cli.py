"""The command line is thin: each command's call of the library binds to the function's
signature (keyword-only options stay keyword-only), checked for every command without running it."""

import ast
import importlib
import inspect
from pathlib import Path

import emofeat.cli

CLI = Path(emofeat.cli.__file__).parent


def library_calls():
    """(module file, line, library function, call node) for every call of a name imported from
    emofeat in the CLI's modules (at the top or inside a command)."""
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emofeat"):
                if node.module.startswith("emofeat.cli"):
                    continue
                module = importlib.import_module(node.module)
                for alias in node.names:
                    obj = getattr(module, alias.name, None)
                    if inspect.isfunction(obj):
                        imported[alias.asname or alias.name] = obj
        for node in ast.walk(tree):
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if called and node.func.id in imported:
                yield path.name, node.lineno, imported[node.func.id], node


def test_every_library_call_of_the_cli_binds_to_its_signature():
    calls = list(library_calls())
    assert len(calls) >= 15  # every command calls the library
    for name, line, function, node in calls:
        if any(isinstance(a, ast.Starred) for a in node.args):
            continue
        keywords = {k.arg: None for k in node.keywords if k.arg is not None}
        has_splat = any(k.arg is None for k in node.keywords)
        signature = inspect.signature(function)
        try:
            if has_splat:
                signature.bind_partial(*[None] * len(node.args), **keywords)
            else:
                signature.bind(*[None] * len(node.args), **keywords)
        except TypeError as err:
            raise AssertionError(f"cli/{name}:{line} calls {function.__name__}: {err}") from None


def test_the_cli_starts_without_the_heavy_libraries():
    """Every command used to pay 0.9 s importing scikit-learn and LightGBM for `stack --meta`'s
    choices; the CLI imports neither torch nor them until a command needs them."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "sklearn", "lightgbm")
    code = f"import sys, emofeat.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from click.testing import CliRunner

    from emofeat.cli import main

    result = CliRunner().invoke(main, ["stack", "--meta", "bogus"])
    assert result.exit_code == 2 and "--meta must be one of" in result.output
    assert "lgbm" in result.output and "auto" in result.output and "'bogus'" in result.output
