"""The reference recipe's dry run on the synthetic corpus: inputs checked, steps printed, nothing run."""

from click.testing import CliRunner

from emofeat.cli import main


def test_dry_run_checks_inputs_and_prints_the_steps(corpus_dir, tmp_path):
    out = tmp_path / "ref"
    args = [
        "recipe",
        "emo-ensemble",
        "--kemdy20",
        str(corpus_dir / "KEMDy20_v1_1"),
        "--aihub",
        str(corpus_dir / "AI_Hub"),
        "--out",
        str(out),
        "--dry-run",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "kemdy20_sessions 5" in r.output and "published KEMDy20 v1_1 has 40" in r.output
    assert "[18/18] stack lgbm" in r.output and "emofeat fuse --model mmm" in r.output
    assert (
        "--preset kobert-ref --dropout 0.5" in r.output
        and "--preset wav2vec2-ref-rev --reverse" in r.output
    )
    assert "--weights 0.25,0.25,1/6,1/6,1/6" in r.output
    assert not out.exists()  # a dry run writes nothing


def test_dry_run_reports_broken_inputs(corpus_dir, tmp_path):
    r = CliRunner().invoke(
        main, ["recipe", "emo-ensemble", "--kemdy20", str(tmp_path), "--dry-run"]
    )
    assert r.exit_code == 2 and "annotation" in r.output


def test_reference_protocol_trains_on_all_rows_and_only_soft_votes(corpus_dir, tmp_path):
    args = [
        "recipe",
        "emo-ensemble",
        "--kemdy20",
        str(corpus_dir / "KEMDy20_v1_1"),
        "--out",
        str(tmp_path / "ref"),
        "--dry-run",
    ]
    r = CliRunner().invoke(main, [*args, "--protocol", "reference"])
    assert r.exit_code == 0, r.output
    finetunes = [line for line in r.output.splitlines() if "emofeat finetune" in line]
    assert len(finetunes) == 5 and all("--folds 0" in line for line in finetunes)
    assert "[12/12] stack softvote" in r.output and "--meta lgbm" not in r.output
    crossfit = CliRunner().invoke(main, args)
    assert "--folds 0" not in crossfit.output and "--meta lgbm" in crossfit.output


def test_recipe_takes_its_options_from_a_config_file(corpus_dir, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        f"kemdy20: {corpus_dir / 'KEMDy20_v1_1'}\nprotocol: reference\nfolds: 3\nout: {tmp_path / 'r'}\n"
    )
    r = CliRunner().invoke(main, ["recipe", "emo-ensemble", "--config", str(config), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "[12/12] stack softvote" in r.output  # protocol from the file
    r = CliRunner().invoke(
        main,
        ["recipe", "emo-ensemble", "--config", str(config), "--protocol", "crossfit", "--dry-run"],
    )
    assert "[18/18] stack lgbm" in r.output  # the flag wins over the file
    config.write_text("kemdy20: x\nlearning_rate: 1\n")
    r = CliRunner().invoke(main, ["recipe", "emo-ensemble", "--config", str(config), "--dry-run"])
    assert r.exit_code == 2 and "unknown option(s) ['learning_rate']" in r.output
