"""Run and stack folders are read only through RunFolder and StackFolder: a folder that is not
what it claims, or whose files were damaged, gives one message naming the file, never a
traceback or a wrong table."""

import joblib
import pytest
from click.testing import CliRunner
from test_bad_inputs import small_store

from emofeat.analysis.compare import compare, find_artifacts
from emofeat.cli import main
from emofeat.errors import EmofeatError
from emofeat.recipes.infer import stack_stores
from emofeat.stack.folder import StackFolder


@pytest.fixture
def stack_dir(tmp_path):
    a, b = small_store(tmp_path / "a.h5"), small_store(tmp_path / "b.h5")
    out = tmp_path / "st"
    r = CliRunner().invoke(
        main,
        ["stack", "--store", str(a), "--store", str(b), "--meta", "softvote", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    return out, (a, b)


def test_a_stack_folder_reads_back_what_stack_wrote(stack_dir):
    out, stores = stack_dir
    folder = StackFolder(out)
    assert folder.stores() == [p.resolve() for p in stores]
    assert folder.metrics()["meta"] == "softvote"
    assert list(folder.load_model().named_steps) == ["features", "meta"]


def test_a_damaged_stack_folder_is_refused_naming_the_file(stack_dir):
    out, _ = stack_dir
    joblib.dump({"not": "a pipeline"}, out / "model.joblib")
    with pytest.raises(EmofeatError, match="model.joblib: not a stack written by this emofeat"):
        StackFolder(out).load_model()
    (out / "model.joblib").unlink()
    with pytest.raises(EmofeatError, match="no model.joblib"):
        StackFolder(out).load_model()
    (out / "metrics.json").write_text("{truncated")
    with pytest.raises(EmofeatError, match="metrics.json: not valid JSON"):
        StackFolder(out).metrics()
    (out / "config.yaml").write_text("config: {meta: softvote}\n")  # a record without stores
    with pytest.raises(EmofeatError, match="lists no stores"):
        stack_stores(out)
    (out / "config.yaml").write_text("- a list\n")
    with pytest.raises(EmofeatError, match="no `config` mapping"):
        StackFolder(out).read_record()


def test_compare_finds_emofeat_folders_and_passes_over_foreign_ones(stack_dir, tmp_path):
    out, _ = stack_dir
    foreign = tmp_path / "other"  # someone's folder that happens to hold these names
    foreign.mkdir()
    (foreign / "config.yaml").write_text("learning_rate: 0.1\n")
    (foreign / "metrics.json").write_text('{"meta": "mine"}')
    found = find_artifacts([tmp_path])
    assert [a.path for a in found] == [out]
    table = compare([tmp_path])
    assert list(table["kind"]) == ["stack"]
    (out / "metrics.json").unlink()  # a stack without metrics is not a result yet
    with pytest.raises(EmofeatError, match="no stack or run folders"):
        find_artifacts([tmp_path])


@pytest.mark.parametrize(
    "metrics",
    ['{"meta": "softvote", "test": [1, 2]}', '{"meta": "softvote", "cv": {"accuracy": 3}}', "[]"],
)
def test_compare_names_a_crafted_metrics_file_instead_of_a_traceback(stack_dir, metrics):
    out, _ = stack_dir
    (out / "metrics.json").write_text(metrics)
    with pytest.raises(
        EmofeatError, match=r"st(/metrics\.json: expected a JSON dict|: its metrics)"
    ):
        compare([out])
