"""The reference recipe's dry run on the synthetic corpus: inputs checked, steps printed, nothing run."""

import numpy as np
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
    assert "[19/19] stack lgbm" in r.output and "emofeat fuse --model mmm" in r.output
    figures = next(line for line in r.output.splitlines() if "emofeat data stats" in line)
    import shlex

    words = shlex.split(figures.split("$", 1)[1])[3:]
    stats = main.get_command(None, "data").get_command(None, "stats")
    parsed = stats.make_context("stats", words).params
    assert str(parsed["manifest"]) == str(out / "manifest.csv")
    assert str(parsed["plot"]) == str(out / "figures")
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
    assert "[16/16] stack softvote" in r.output and "--meta lgbm" not in r.output
    # As the reference ran: its seed, random batch order, the reverse model on 90 %.
    assert all("--seed 42 --batch-order" in line for line in finetunes)
    assert sum("--train-fraction 0.9" in line for line in finetunes) == 1
    # MMM's row as published: one model on all train rows, outside the soft vote.
    assert (
        "emofeat fuse --model mmm" in r.output
        and "--folds 0 --out" in r.output.split("emofeat fuse")[1]
    )
    crossfit = CliRunner().invoke(main, args)
    assert "--folds 0" not in crossfit.output and "--meta lgbm" in crossfit.output


def test_recipe_takes_its_options_from_a_config_file(corpus_dir, tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text(
        f"kemdy20: {corpus_dir / 'KEMDy20_v1_1'}\nprotocol: reference\nfolds: 3\nout: {tmp_path / 'r'}\n"
    )
    r = CliRunner().invoke(main, ["recipe", "emo-ensemble", "--config", str(config), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "[16/16] stack softvote" in r.output  # protocol from the file
    r = CliRunner().invoke(
        main,
        ["recipe", "emo-ensemble", "--config", str(config), "--protocol", "crossfit", "--dry-run"],
    )
    assert "[19/19] stack lgbm" in r.output  # the flag wins over the file
    config.write_text("kemdy20: x\nlearning_rate: 1\n")
    r = CliRunner().invoke(main, ["recipe", "emo-ensemble", "--config", str(config), "--dry-run"])
    assert r.exit_code == 2 and "recipe.yaml: unknown option(s) learning_rate; known:" in r.output


def test_every_printed_command_line_parses_to_the_options_its_step_runs(tmp_path):
    """What a plan prints is what it runs: each step's command line, parsed by the CLI itself,
    gives the options the step's call receives (the device, weights and MMM options included)."""
    import itertools
    import shlex
    from pathlib import Path

    from emofeat.recipes.pipeline import (
        BASE_MODELS,
        MMMPlan,
        ensemble_plan,
        frozen_plan,
        prepare_step,
        repeated_step,
        repetition_folder,
    )

    for protocol, repetition in itertools.product(("crossfit", "reference"), (0, 1)):
        out = repetition_folder(tmp_path / "out", repetition)
        for base in BASE_MODELS:  # extract --run must name an existing folder
            (out / "runs" / base.name).mkdir(parents=True, exist_ok=True)
        steps = ensemble_plan(
            out / "manifest.csv",
            out,
            kobert="/models/kobert",
            wav2vec2="/models/w2v",
            protocol=protocol,
            device="cuda",
            precision="bf16",
            mmm=MMMPlan("/models/kcelectra", "/models/w2v", options={"epochs": 3, "lr": 0.001}),
            repetition=repetition,
        )
        assert len(steps) == (17 if protocol == "crossfit" else 14)
        # repetition r trains every model with its seed + r; the first adds no option
        base_seed = 42 if protocol == "reference" else None
        for step in steps:
            if step.name in ("finetune", "fuse"):
                start = 1024 if step.name == "fuse" else base_seed or 0
                want = start + repetition if repetition or step.options.get("seed") else None
                assert step.options.get("seed") == want, step.command
        if repetition and protocol == "crossfit":  # the frozen recipe's steps too
            models = {"enc": str(tmp_path / "enc"), "smile": "opensmile:eGeMAPSv02"}
            steps += frozen_plan(
                out / "manifest.csv",
                out / "frozen",
                models,
                pooling="mean+std",
                device="cuda",
                precision="bf16",
                head={"epochs": 7, "head": "mlp"},
            )
        if repetition:
            steps.append(repeated_step(tmp_path / "out", 2))
            steps.append(
                prepare_step("p", {"kemdy20": tmp_path, "seed": 1, "out": out / "manifest.csv"})
            )
        for step in steps:
            args = shlex.split(step.command)
            assert args[:2] == ["emofeat", *step.name.split()[:1]]
            group = main
            words = step.name.split()
            for word in words[:-1]:
                group = group.get_command(None, word)
            command = group.get_command(None, words[-1])
            parsed = command.make_context(step.name, args[1 + len(words) :]).params
            declared = {
                p.name: p.declared_option for p in command.params if hasattr(p, "declared_option")
            }
            for key, value in step.options.items():
                got = parsed["stores" if key == "store" else key]
                if key == "paths":  # compare's arguments
                    value = list(value)
                if key in declared:  # a declared option: the value its config class receives
                    d = declared[key]
                    assert d.convert(got) == d.convert(value), (step.command, key)
                elif isinstance(value, list):
                    assert [Path(v) for v in got] == [Path(v) for v in value], step.command
                elif isinstance(value, Path):
                    assert Path(got) == value, step.command
                else:
                    assert got == value, (step.command, key)
            assert parsed.get("device", "cuda") == "cuda"  # every step runs where it was asked


def test_frozen_recipe_reports_each_head_and_ensemble_as_their_folders_hold_them(
    manifest_path, tiny_kobert, tmp_path
):
    """recipe frozen: an all-layer store and a layer-sum head per model (a tiny KoBERT folder,
    openSMILE when installed), their stacks, and a report whose every figure is the one its
    run's or stack's metrics.json holds."""
    import importlib.util
    import json

    import yaml

    out = tmp_path / "frozen"
    args = ["recipe", "frozen", "--manifest", str(manifest_path), "--out", str(out)]
    args += ["--model", f"text={tiny_kobert}", "--epochs", "5"]
    names = ["text"]
    if importlib.util.find_spec("opensmile") is not None:
        args += ["--model", "opensmile:eGeMAPSv02"]
        names.append("eGeMAPSv02")
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = (out / "report.md").read_text()
    for name in names:
        summary = json.loads((out / "runs" / name / "metrics.json").read_text())["summary"]
        cv = summary["accuracy"]
        assert f"| layer-sum head: {name} | {cv['mean']:.4f} ± {cv['std']:.4f} |" in report
        record = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        assert record["config"]["epochs"] == 5  # the head's options reach every head
    for meta in ("softvote", "logreg", "lgbm"):
        test = json.loads((out / "runs" / f"stack-{meta}" / "metrics.json").read_text())["test"]
        assert f"{test['ensemble']['accuracy']:.4f}" in report
    again = CliRunner().invoke(main, args, catch_exceptions=False)  # resumes: nothing retrained
    assert again.output.count("already trained, kept") == 2 * len(names)


def test_infer_rebuilds_the_frozen_heads_for_new_recordings(manifest, manifest_path, tmp_path):
    """A stack of layer-sum heads labels new recordings: infer extracts each frozen encoder's
    layers for them and applies the heads' fold models; for recordings that are the manifest's
    test rows under new ids, the probabilities equal the stack's own test predictions — after
    the project folder (encoders, stores, heads, stack) moved elsewhere."""
    import shutil

    import pandas as pd
    from conftest import recordings_csv

    from emofeat.recipes.frozen import frozen
    from emofeat.recipes.infer import FusedPlan, extraction_plan, infer
    from emofeat.testing.tiny import build_tiny_kobert

    texts, project = list(manifest.frame["text"]), tmp_path / "project"
    models = {  # two heads, whose stores share a file name (runs/NAME/layer-sum.h5)
        name: str(build_tiny_kobert(project / name, texts, hidden=32, seed=seed))
        for name, seed in (("text", 0), ("copy", 1))
    }
    frozen(manifest_path, project / "f", models, head={"epochs": 3})
    shutil.move(project, tmp_path / "moved")
    stack_dir = tmp_path / "moved" / "f" / "runs" / "stack-logreg"
    plan = extraction_plan(stack_dir)
    assert sorted(plan) == ["copy-layer-sum", "text-layer-sum"]
    for name in ("copy", "text"):  # a head: its run, and its input store's extraction
        how = plan[f"{name}-layer-sum"]
        assert isinstance(how, FusedPlan) and list(how.inputs) == [name]
    rows = np.flatnonzero(manifest.split == "test")[:6]
    recordings_csv(manifest, rows, tmp_path / "new.csv")
    got = pd.read_csv(infer(stack_dir, tmp_path / "new.csv", tmp_path / "pred.csv"))
    own = pd.read_csv(stack_dir / "predictions.csv").set_index("id")
    expected = own.loc[manifest.ids[rows]].filter(like="p_").to_numpy()
    np.testing.assert_allclose(got.filter(like="p_").to_numpy(), expected, atol=1e-5)
    assert set(got.provenance) == {"out-of-sample"}
