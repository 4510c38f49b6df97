"""The layout shows the architecture: no two modules import each other, directly or through
others, at the top or inside a function (a function-level import hides a cycle, it does not
break it)."""

import ast
from pathlib import Path

import emofeat

ROOT = Path(emofeat.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the emofeat modules it imports anywhere in its body."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from pkg import sub` imports the submodule; `from pkg import name`, pkg.
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs or [base]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "emofeat.extract.run" in graph["emofeat.cli.extract"]  # imported inside the command
    assert "emofeat.store.recover" in graph["emofeat.store.reader"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


# ----------------------------------------------------------- one owner per folder layout
# The files inside run and stack folders: named by their owners alone (RunFolder, StackFolder,
# and the records module for the record's own name), so no other module reads such a folder
# behind their back.
FOLDER_FILES = (
    "config.yaml",
    "metrics.json",
    "rows.json",
    "log_history.json",
    "skipped.csv",
    "training_curves.png",
    "model.joblib",
    "confusion.png",
)
OWNERS = {"emofeat.runs", "emofeat.stack.folder", "emofeat.records"}


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def folder_file_names(path: Path) -> list[str]:
    """String constants in ``path``'s code that name a folder's file as a path would (not its
    docstrings, not prose such as help texts: a path holds no space)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [
        f"line {node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docs
        and " " not in node.value
        and any(name in node.value for name in FOLDER_FILES)
    ]


def test_only_the_folder_owners_name_the_files_of_run_and_stack_folders():
    found = {
        module_name(p): hits
        for p in ROOT.rglob("*.py")
        if module_name(p) not in OWNERS and (hits := folder_file_names(p))
    }
    assert found == {}


def test_the_folder_file_check_sees_a_path_in_code(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        '"""Reads metrics.json (a docstring may say so)."""\n'
        'HELP = "the run\'s metrics.json (prose)"\n'
        'P = "runs/x/metrics.json"\n'
    )
    assert folder_file_names(sneaky) == ["line 3: 'runs/x/metrics.json'"]


# ------------------------------------------------- every output kind registers on import
def output_kinds_used() -> dict[str, set[str]]:
    """Module → the output kinds it checks or recognises by name (check_output(kind=...),
    is_output(path, "kind"))."""
    used: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            kinds = []
            if name == "check_output":
                kinds = [k.value for k in node.keywords if k.arg == "kind"]
            elif name == "is_output" and len(node.args) > 1:
                kinds = [node.args[1]]
            for kind in kinds:
                if isinstance(kind, ast.Constant) and isinstance(kind.value, str):
                    used.setdefault(module_name(path), set()).add(kind.value)
    return used


def test_each_module_that_checks_an_output_kind_registers_it_when_imported_alone():
    """A kind is registered by the module that writes it; a module that checks a kind must
    import that owner, or the check raises KeyError in a process that imported nothing else."""
    import subprocess
    import sys

    used = output_kinds_used()
    assert {"store", "stack", "run", "manifest"} <= set().union(*used.values())
    script = (
        "import importlib, json, sys\n"
        "from emofeat.outputs import KINDS\n"
        "out = {}\n"
        "for module, kinds in json.loads(sys.argv[1]).items():\n"
        "    importlib.import_module(module)\n"
        "    out[module] = sorted(set(kinds) - set(KINDS))\n"
        "print(json.dumps(out))\n"
    )
    import json

    missing = {}
    for module, kinds in sorted(used.items()):  # one fresh process per module: imported alone
        got = subprocess.run(
            [sys.executable, "-c", script, json.dumps({module: sorted(kinds)})],
            capture_output=True,
            text=True,
            check=True,
        )
        if lacking := json.loads(got.stdout)[module]:
            missing[module] = lacking
    assert missing == {}
