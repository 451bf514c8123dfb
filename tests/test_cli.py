"""The shape of every command: --config + key=value, errors as one line and a documented exit code,
outputs never on top of inputs, and `nyxmed code` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nyxmed.cli import build_parser, main
from nyxmed.errors import NotFound, OutputConflict, UsageError
from nyxmed.sources import counts_path_for, write_cases
from nyxmed.synth import generate_cases


@pytest.fixture()
def cases_file(tmp_path):
    path = tmp_path / "cases.jsonl"
    write_cases(generate_cases(8, 3), path)
    return path


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nyxmed", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("argv", [
    ["validate", "x.jsonl"], ["synth"], ["evaluate"], ["benchmark", "create"], ["compare", "a", "b"], ["merge"],
    ["publish", "p"], ["releases", "list"], ["demo"], ["code", "x.jsonl"]])
def test_every_config_command_takes_config_and_overrides(argv):
    ns = build_parser().parse_args([*argv[:1], "--config", "c.yaml", *argv[1:], "seed=3"]
                                   if argv[0] not in ("releases", "benchmark") else
                                   [argv[0], "--config", "c.yaml", argv[1], "seed=3"] if argv[0] == "releases" else
                                   [*argv, "--config", "c.yaml", "seed=3"])
    assert ns.config == "c.yaml" and ns.overrides == ["seed=3"]


def test_help_text_comes_from_field_metadata(capsys):
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    assert "base model folder or Hub id (must be the adapter's base)" in " ".join(capsys.readouterr().out.split())


def test_unknown_key_and_bad_value_name_the_key_and_exit_2(cases_file):
    done = run_cli("validate", cases_file, "shwo=3")
    assert done.returncode == UsageError.exit_code and "shwo" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("evaluate", "--predictions", cases_file, "eval.backend=tpu")
    assert done.returncode == 2 and "eval.backend: 'tpu'" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("synth", "--out", "x.jsonl", "n=-4")
    assert done.returncode == 2 and "n: must be >= 0" in done.stderr


def test_the_documented_override_of_docs_production_works(tmp_path):
    from nyxmed.config import load_eval_config

    assert load_eval_config(None, ["eval.backend=vllm"]).backend == "vllm"


def test_same_error_kind_same_exit_code_in_two_commands(cases_file, tmp_path):
    missing = tmp_path / "none.csv"
    a = run_cli("codes", "check", "74177", "--cpt-table", missing)
    b = run_cli("validate", cases_file, "--cpt-table", missing)
    assert a.returncode == b.returncode == NotFound.exit_code
    for done in (a, b):
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "none.csv" in done.stderr
    debug = run_cli("validate", cases_file, "--cpt-table", missing, env={"NYXMED_DEBUG": "1"})
    assert "Traceback" in debug.stderr


def test_train_into_a_used_folder_or_resume_with_nothing_is_one_line(tmp_path):
    (tmp_path / "run" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (tmp_path / "ds").mkdir()
    common = ["--config", "configs/tiny.yaml", f"train.dataset_dir={tmp_path / 'ds'}", "train.deepspeed=null"]
    used = run_cli("train", *common, f"train.output_dir={tmp_path / 'run'}")
    assert used.returncode == OutputConflict.exit_code and "Traceback" not in used.stderr
    assert "holds checkpoints of an earlier run" in used.stderr.splitlines()[-1]
    nothing = run_cli("train", "--resume", *common, f"train.output_dir={tmp_path / 'fresh'}")
    assert nothing.returncode == NotFound.exit_code and "Traceback" not in nothing.stderr
    assert nothing.stderr.splitlines()[-1].startswith("nyxmed train: train.resume=true but")


def _snapshot(path):
    return {p: p.read_bytes() for p in ([path] if path.is_file() else sorted(path.rglob("*"))) if p.is_file()}


def test_writing_commands_refuse_an_output_that_is_an_input(cases_file, tmp_path):
    cfg = tmp_path / "synth.yaml"
    cfg.write_text("n: 3\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(cases_file)
    runs = {  # command -> the input it would overwrite
        ("validate", cases_file, "--rejects", cases_file): cases_file,
        ("validate", cases_file, "--rejects", link): cases_file,  # a symlink to the input
        ("synth", "--config", cfg, "--out", cfg): cfg,
        ("evaluate", "--predictions", cases_file, "--gold", cases_file, "--out", tmp_path): cases_file,
        ("compare", tmp_path, tmp_path / "b", "--out", tmp_path): cases_file,
        ("benchmark", "create", "--data", cases_file, "--out", cases_file): cases_file,
        ("merge", "--base", tmp_path, "--adapter", tmp_path / "a", "--out", tmp_path): cases_file,
        ("publish", tmp_path, "--repo", "o/n", "--version", "v1", "--out", tmp_path, "--dry-run"): cases_file,
        ("releases", "--registry", tmp_path, "register", tmp_path, "--version", "v1"): cases_file,
        ("code", cases_file, "--model", "m", "--preprocessor", "p", "--out", cases_file): cases_file,
        ("code", cases_file, "--model", "m", "--preprocessor", "p", "--rejects", tmp_path / "x.jsonl",
         "--out", link): cases_file,
    }
    for argv, protected in runs.items():
        before = _snapshot(protected)
        assert main([str(a) for a in argv]) == OutputConflict.exit_code, argv
        assert _snapshot(protected) == before, argv
    assert link.is_symlink() and not counts_path_for(cases_file).exists()


def test_code_end_to_end_with_rejects_and_counts(tmp_path, tiny_base_dir, tiny_tokenizer):
    from nyxmed.config import load_recipe
    from nyxmed.dataset import build_dataset

    recipe = load_recipe(None, [f"data.out_dir={tmp_path / 'data'}", "data.heldout_size=20", "data.val_size=10",
                                "retrieval.dense=false", "prompt.max_length=3900"])
    built = build_dataset(recipe, tiny_tokenizer, generate_cases(120, 5), progress=False)
    reports = tmp_path / "reports.jsonl"
    rows = [{"id": f"r{i}", "report_text": c.report_text} for i, c in enumerate(generate_cases(3, 99))]
    rows += [{"id": "r0", "report_text": "dup"}, {"id": "empty", "report_text": "  "}]
    reports.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    out, rejects = tmp_path / "coded.jsonl", tmp_path / "rejects.jsonl"
    done = run_cli("code", reports, "--model", tiny_base_dir, "--preprocessor", built.out_dir / "preprocessor",
                   "--out", out, "--rejects", rejects, "--version", "v1", "max_new_tokens=8", "device=cpu",
                   "dtype=float32")
    assert done.returncode == 0, done.stderr
    assert "read 6 = coded 3 + rejected 3" in done.stdout
    coded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["id"] for c in coded] == ["r0", "r1", "r2"]
    assert set(coded[0]) >= {"id", "code_line", "cpt", "modifiers", "icd", "invalid_codes", "issues", "version",
                             "preprocessor_id"} and coded[0]["version"] == "v1"
    assert all(c["constrained"] for c in coded)  # nyxmed code decodes under the code-line grammar by default
    assert not any(c["invalid_codes"] for c in coded)
    rej = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {r["field"] for r in rej} >= {"id", "report_text"} and all(set(r) == {"id", "line", "field", "reason"}
                                                                         for r in rej)
    assert json.loads(counts_path_for(rejects).read_text()) == {"read": 6, "coded": 3, "rejected": 3}
    one = run_cli("code", "--text", rows[0]["report_text"], "--model", tiny_base_dir, "--preprocessor",
                  built.out_dir / "preprocessor", "max_new_tokens=8", "device=cpu", "dtype=float32",
                  "--no-constrained", "--out", tmp_path / "free.jsonl")
    assert one.returncode == 0 and "read 1 = coded 1 + rejected 0" in one.stdout
    assert json.loads((tmp_path / "free.jsonl").read_text())["constrained"] is False


def test_config_file_and_dotted_override_reach_the_command(tmp_path):
    from nyxmed.sources import read_cases

    cfg = tmp_path / "synth.yaml"
    cfg.write_text("n: 3\nseed: 4\n")
    assert main(["synth", "--config", str(cfg), "--out", str(tmp_path / "a.jsonl"), "n=5"]) == 0
    assert len(read_cases(tmp_path / "a.jsonl").cases) == 5  # the override over the file


def test_evaluate_takes_recipe_overrides_as_docs_production_shows(tmp_path, cases_file):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": c.id, "output": "74177, , R10.84"}) + "\n"
                             for c in generate_cases(8, 3)))
    out = tmp_path / "eval"
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(cases_file), "--out", str(out),
                 "eval.bootstrap=20", "eval.seed=4"]) == 0
    assert json.loads((out / "metrics.json").read_text())["bootstrap"]["resamples"] == 20


def test_releases_reads_its_registry_from_config(tmp_path, capsys):
    cfg = tmp_path / "releases.yaml"
    cfg.write_text(f"registry: {tmp_path / 'reg'}\n")
    assert main(["releases", "--config", str(cfg), "list"]) == 0
    assert "reg" in capsys.readouterr().out and (tmp_path / "reg").is_dir()
    assert main(["releases", "list", f"registry={tmp_path / 'other'}"]) == 0 and (tmp_path / "other").is_dir()


def test_recipe_commands_refuse_an_output_over_an_input(cases_file, tmp_path):
    recipe = tmp_path / "demo.yaml"
    recipe.write_text("data: {}\n")
    runs = [["build-data", "--config", "configs/tiny.yaml", f"data.sources=[{cases_file}]", f"data.out_dir={tmp_path}"],
            ["train", "--config", "configs/tiny.yaml", f"train.dataset_dir={tmp_path}", f"train.output_dir={tmp_path}"],
            ["demo", f"recipe={recipe}", "--out", str(tmp_path)]]
    for argv in runs:
        before = _snapshot(tmp_path)
        assert main(argv) == OutputConflict.exit_code, argv
        assert _snapshot(tmp_path) == before, argv


def test_demo_continue_without_a_demo_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    from nyxmed.cli import main

    assert main(["demo", "--continue", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `nyxmed demo --out" in err
    assert not (tmp_path / "none").exists()
