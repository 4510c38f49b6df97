"""One output policy (emofeat.outputs): an output is never an input of the same command, and only
what emofeat made, as that kind of output, is ever replaced. Each case is a misuse that used to
exit 0 having replaced the file; each must now fail with a message and leave it byte for byte."""

import shutil

import pytest
from click.testing import CliRunner
from test_bad_inputs import small_store

import emofeat.extract.run
import emofeat.runs
import emofeat.stack.ensemble  # noqa: F401  (registers the stack kind)
from emofeat.cli import main
from emofeat.errors import EmofeatError
from emofeat.outputs import check_output, is_record


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def untouched(path, before):
    return path.read_bytes() == before


@pytest.fixture
def stacked(tmp_path):
    a, b = small_store(tmp_path / "a.h5"), small_store(tmp_path / "b.h5")
    r = run("stack", "--store", a, "--store", b, "--meta", "softvote", "--out", tmp_path / "st")
    assert r.exit_code == 0, r.output
    return a, b, tmp_path / "st"


def test_an_output_is_never_an_input_of_the_same_command(stacked, tmp_path):
    a, b, st = stacked
    cases = [
        (a, ["store", "export", a, "-o", a]),
        (a, ["predict", "--stack", st, "--store", a, "--store", b, "-o", a]),
        (
            st / "model.joblib",
            ["predict", "--stack", st, "--store", a, "--store", b, "-o", st / "model.joblib"],
        ),
        (b, ["store", "merge", a, b, "-o", b]),
    ]
    csv = tmp_path / "corpus.csv"
    csv.write_text("id,audio_path,text\nx1,a.wav,hello\n", encoding="utf-8")
    cases.append((csv, ["data", "prepare", "--csv", csv, "--folds", "0", "--out", csv]))
    cases.append((csv, ["infer", "--stack", st, "--csv", csv, "--out", csv]))
    for victim, args in cases:
        before = victim.read_bytes()
        r = run(*args)
        assert r.exit_code == 2 and "is an input of this command" in r.output, (args, r.output)
        assert untouched(victim, before), args


def test_only_what_emofeat_made_of_that_kind_is_replaced(
    stacked, tmp_path, manifest_path, tiny_kobert
):
    a, b, st = stacked
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for args in (
        ["store", "merge", a, b, "-o", notes],
        ["store", "export", a, "-o", notes],
        ["predict", "--stack", st, "--store", a, "--store", b, "-o", notes],
    ):
        r = run(*args)
        assert r.exit_code == 2 and "notes.txt exists and is not a" in r.output, r.output
        assert notes.read_text() == "mine"
    # A folder with a report.md and config.yaml of its own is not a stack to replace.
    own = tmp_path / "paper"
    own.mkdir()
    (own / "report.md").write_text("draft")
    (own / "config.yaml").write_text("title: my paper\n")
    r = run("stack", "--store", a, "--store", b, "--meta", "softvote", "--out", own)
    assert r.exit_code == 2 and "is not a stack emofeat made" in r.output
    assert (own / "report.md").read_text() == "draft"
    # finetune --overwrite recognises a run by its record, not by entry names.
    owner = tmp_path / "owner"
    (owner / "logs").mkdir(parents=True)
    (owner / "fold-notes").mkdir()
    (owner / "config.yaml").write_text("owner: me\n")
    r = run("finetune", "--model", "kobert", "--model-path", tiny_kobert, "--manifest",
            manifest_path, "--out", owner, "--overwrite", "--preset", "kobert-tiny")  # fmt: skip
    assert r.exit_code == 2 and "is not a run's record written by emofeat" in r.output, r.output
    assert (owner / "config.yaml").read_text() == "owner: me\n" and (owner / "fold-notes").is_dir()
    # Re-running an emofeat output is still fine: the stack replaces its own earlier stack.
    r = run("stack", "--config", st / "config.yaml")
    assert r.exit_code == 0, r.output


def test_records_never_land_on_a_file_emofeat_did_not_make_for_that_output(
    tiny_wav2vec2, manifest_path, tmp_path, kobert_run
):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(manifest_path, corpus / "manifest.csv")
    shutil.copy(manifest_path.with_suffix(".yaml"), corpus / "manifest.yaml")
    sidecar = (corpus / "manifest.yaml").read_bytes()
    # --out corpus/manifest.h5 would write its record over the manifest's sidecar.
    args = ["extract", "--model", tiny_wav2vec2, "--manifest", corpus / "manifest.csv"]
    r = run(*args, "--out", corpus / "manifest.h5")
    assert r.exit_code == 2 and "its record" in r.output and "manifest.yaml" in r.output
    assert untouched(corpus / "manifest.yaml", sidecar) and not (corpus / "manifest.h5").exists()
    # --out RUN/config.h5 would replace the run's own config.yaml.
    run_dir = tmp_path / "run"
    shutil.copytree(kobert_run, run_dir)
    config = (run_dir / "config.yaml").read_bytes()
    r = run(
        "extract", "--run", run_dir, "--manifest", manifest_path, "--out", run_dir / "config.h5"
    )
    assert r.exit_code == 2 and "is an input of this command" in r.output
    assert untouched(run_dir / "config.yaml", config)
    # A manifest's sidecar never replaces a YAML file of someone else's.
    (tmp_path / "mine.yaml").write_text("mine: true\n")
    r = run("data", "prepare", "--csv", corpus / "manifest.csv", "--out", tmp_path / "mine.csv")
    assert r.exit_code == 2 and "mine.yaml exists and is not a manifest sidecar" in r.output
    assert (tmp_path / "mine.yaml").read_text() == "mine: true\n"


def test_records_carry_their_kind(tmp_path):
    from emofeat.records import dump_yaml, provenance

    path = tmp_path / "x.yaml"
    path.write_text(dump_yaml(provenance({"pooling": "mean"}, output="store-record")))
    assert is_record(path, "store-record") and not is_record(path, "run")
    path.write_text(dump_yaml(provenance({"family": "bert"})))  # before the marker: by content
    assert is_record(path, "run") and not is_record(path, "stack")
    with pytest.raises(EmofeatError, match="is not a stack emofeat made"):
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "config.yaml").write_bytes(path.read_bytes())
        check_output(tmp_path / "d", kind="stack")
