"""Evaluation runs, benchmark manifests, reports and comparisons, end to end through the CLI."""

from __future__ import annotations

import json
import struct
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from nyxmed import evaluation as E
from nyxmed.cases import Case
from nyxmed.cli import main
from nyxmed.codeline import CodeLine
from nyxmed.config import EvalConfig

GOLD = [  # (cpt, modifiers, icd, modality)
    (["74177"], ["26"], ["R10.84", "K57.30"], "CT"),
    (["73721"], ["RT"], ["M25.561"], "MR"),
    (["93970"], [], ["I83.93"], "US"),
    (["71046"], [], ["J18.9", "R05.9"], "XR"),
    (["74176"], [], ["N20.0"], "CT"),
    (["70450"], [], ["R51.9"], "CT"),
]


def make_cases(changed: dict[int, CodeLine] | None = None) -> list[Case]:
    cases = []
    for i, (cpt, mods, icd, modality) in enumerate(GOLD):
        codes = (changed or {}).get(i) or CodeLine.of(cpt, mods, icd)
        cases.append(Case(id=f"case-{i}", exam_description=f"{modality} exam {i}", reason_for_exam="pain",
                          report_text=f"Report {i}: findings described here.", codes=codes, meta={"modality": modality}))
    return cases


def save_built_dataset(cases: list[Case], out: Path) -> Path:
    """A built-dataset folder with the contract's evaluation columns (heldout split)."""
    from datasets import Dataset, DatasetDict

    from nyxmed.codes import cpt as cpt_codes

    rows = [{"id": c.id, "record_hash": c.record_hash(), "system": "You are a certified radiology coder.",
             "user": f"{c.exam_description}\n{c.report_text}", "answer": c.codes.render(), **c.codes.to_dict(),
             "modality": c.meta["modality"], "subsection": cpt_codes.subsection(c.codes.cpt[0])} for c in cases]
    DatasetDict({"heldout": Dataset.from_list(rows), "train": Dataset.from_list(rows[:1])}).save_to_disk(str(out / "dataset"))
    return out


@pytest.fixture()
def data_dir(tmp_path):
    return save_built_dataset(make_cases(), tmp_path / "data")


def write_preds(path: Path, outputs: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "output": v}) + "\n" for k, v in outputs.items()))
    return path


def half_right() -> dict[str, str]:
    """Exact answers for even records, prose without codes for odd ones."""
    return {f"case-{i}": (CodeLine.of(*g[:3]).render() + "<|eot_id|>" if i % 2 == 0 else "Sorry, I cannot code this.")
            for i, g in enumerate(GOLD)}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_rescore_writes_every_artifact(data_dir, tmp_path):
    preds = write_preds(tmp_path / "preds.jsonl", half_right())
    out = tmp_path / "eval"
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(data_dir), "--out", str(out),
                 "--bootstrap", "200"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 6 and m["all_three_exact"] == 0.5 and m["parse_failure_rate"] == 0.5
    assert m["icd_recall_mean"] == 0.5 and m["icd_micro_precision"] == 1.0
    assert m["icd_errors"]["counts"]["missing"] == 4  # odd records: 1 + 2 + 1 missed gold codes, nothing predicted
    assert m["breakdowns"]["modality"]["CT"]["n"] == 3 and set(m["breakdowns"]["subsection"]) >= {"vascular_ultrasound"}
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"case-{i}" for i in range(6)]
    assert rows[0]["parsed_line"] == "74177, 26, R10.84, K57.30" and rows[0]["metrics"]["all_three_exact"] == 1
    assert rows[1]["parsed"]["cpt"] == [] and "no code line found" in rows[1]["parse_issues"]
    assert rows[1]["output"] == "Sorry, I cannot code this."
    report = (out / "report.md").read_text()
    assert "| all_three_exact | 0.5000 | [" in report and "## By modality" in report and "metrics.png" in report
    assert png_size(out / "metrics.png")[0] == 900


def test_rescore_against_a_case_file_and_eval_loss_chart(tmp_path):
    from nyxmed.sources import write_cases

    gold = write_cases(make_cases(), tmp_path / "gold.jsonl")
    preds = write_preds(tmp_path / "preds.jsonl", {"case-0": "74177, 26, R10.84", "case-2": "93970, , I83.93"})
    tm = tmp_path / "training_metrics.json"
    tm.write_text(json.dumps({"log_history": [{"loss": 2.0, "step": 5}, {"eval_loss": 1.5, "step": 10},
                                              {"eval_loss": 1.1, "step": 20}]}))
    cfg = EvalConfig(predictions=str(preds), gold=str(gold), out_dir=str(tmp_path / "eval"),
                     training_metrics=str(tm), bootstrap=100)
    m = E.run(cfg)
    assert m["n"] == 2 and m["icd_recall_mean"] == pytest.approx((1 / 2 + 1) / 2) and m["cpt_exact"] == 1.0
    assert E.read_eval_loss(tm) == [(10, 1.5), (20, 1.1)]
    assert png_size(tmp_path / "eval" / "metrics.png")[0] == 1400  # the loss panel was added


def test_evaluate_script_rescores(data_dir, tmp_path):
    import subprocess
    import sys

    preds = write_preds(tmp_path / "preds.jsonl", half_right())
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "evaluate.py"), "--predictions", str(preds), "--gold",
                           str(data_dir), "--out", str(tmp_path / "eval"), "--bootstrap", "50"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "all_three_exact" in done.stdout
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["all_three_exact"] == 0.5


def test_evaluate_reads_the_recipe_eval_section(data_dir, tmp_path):
    import yaml

    preds = write_preds(tmp_path / "preds.jsonl", half_right())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"eval": {"predictions": str(preds), "gold": str(data_dir), "bootstrap": 20,
                                               "out_dir": str(tmp_path / "from-recipe")}}))
    assert main(["evaluate", "--config", str(recipe), "--seed", "3"]) == 0
    m = json.loads((tmp_path / "from-recipe" / "metrics.json").read_text())
    assert m["bootstrap"] == {"resamples": 20, "seed": 3, "method": "percentile, records resampled"}
    recipe.write_text(yaml.safe_dump({"eval": {"bootsrap": 20}}))
    assert main(["evaluate", "--config", str(recipe)]) == 2  # unknown key: a config error, named


def test_predictions_errors_name_the_line_or_id(data_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "case-0", "output": "x"}\n{"id": "case-0", "output": "y"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: duplicate id 'case-0'"):
        E.read_predictions(bad)
    unknown = write_preds(tmp_path / "u.jsonl", {"nope-1": "74177, , R10.84"})
    with pytest.raises(ValueError, match="not in the gold.*nope-1"):
        E.run(EvalConfig(predictions=str(unknown), gold=str(data_dir), out_dir=str(tmp_path / "e")))


def test_benchmark_create_is_seeded_and_pins_content(data_dir, tmp_path):
    bench = tmp_path / "bench.json"
    assert main(["benchmark", "create", "--pool", "heldout", "--n", "4", "--seed", "17", "--data", str(data_dir),
                 "--out", str(bench)]) == 0
    manifest = json.loads(bench.read_text())
    again = E.create_benchmark(data_dir, tmp_path / "again.json", n=4, seed=17)
    other = E.create_benchmark(data_dir, tmp_path / "other.json", n=4, seed=3)
    assert manifest["n"] == 4 and manifest["records"] == again["records"]
    assert {r["id"] for r in other["records"]} != {r["id"] for r in manifest["records"]}
    hashes = {c.id: c.record_hash() for c in make_cases()}
    assert all(r["record_hash"] == hashes[r["id"]] for r in manifest["records"])
    # a case file gives the same ids and hashes as the built dataset of the same cases
    from nyxmed.sources import write_cases

    from_file = E.create_benchmark(write_cases(make_cases(), tmp_path / "c.jsonl"), tmp_path / "f.json", n=4, seed=17)
    assert from_file["records"] == manifest["records"]


def test_benchmark_refuses_missing_or_changed_records(data_dir, tmp_path, capsys):
    bench = tmp_path / "bench.json"
    manifest = E.create_benchmark(data_dir, bench, n=6, seed=1)
    preds = write_preds(tmp_path / "p.jsonl", half_right())
    ok = E.run(EvalConfig(predictions=str(preds), gold=str(data_dir), benchmark=str(bench), out_dir=str(tmp_path / "ok"),
                          bootstrap=50))
    assert ok["n"] == 6 and ok["run"]["benchmark"]["manifest_hash"] == manifest["manifest_hash"]
    changed = save_built_dataset(make_cases({3: CodeLine.of(["71046"], [], ["J18.9"])})[:5], tmp_path / "changed")
    with pytest.raises(E.BenchmarkMismatch, match=r"1 missing \(ids \['case-5'\]\).*1 changed.*'case-3'"):
        E.run(EvalConfig(predictions=str(preds), gold=str(changed), benchmark=str(bench), out_dir=str(tmp_path / "x")))
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(changed), "--benchmark", str(bench),
                 "--out", str(tmp_path / "y")]) == 3  # InputError (docs/exit-codes.md)
    assert "case-5" in capsys.readouterr().err and not (tmp_path / "y" / "metrics.json").exists()
    edited = json.loads(bench.read_text())
    edited["records"][0]["record_hash"] = "0" * 64
    bench.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="manifest_hash"):
        E.load_benchmark(bench)


def test_compare_runs_and_refusal(data_dir, tmp_path, capsys):
    perfect = {f"case-{i}": CodeLine.of(*g[:3]).render() for i, g in enumerate(GOLD)}
    for name, outputs in (("a", half_right()), ("b", perfect)):
        E.run(EvalConfig(predictions=str(write_preds(tmp_path / f"{name}.jsonl", outputs)), gold=str(data_dir),
                         out_dir=str(tmp_path / name), bootstrap=50))
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp"),
                 "--bootstrap", "300"]) == 0
    cmp = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    row = cmp["metrics"]["all_three_exact"]
    assert (row["a"], row["b"], row["diff"]) == (0.5, 1.0, 0.5)
    assert row["mcnemar"] == {"a_only": 0, "b_only": 3, "p_value": 0.25}  # 2 * 0.5**3
    assert row["diff_ci95"][0] > 0
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| all_three_exact | 0.5000 | 1.0000 | +0.5000 |" in md and "McNemar" in md
    before_after = E.comparison_markdown(cmp, labels=("before", "after"))
    assert "| metric | before | after | after − before |" in before_after
    # a run on fewer records cannot be compared
    E.run(EvalConfig(predictions=str(write_preds(tmp_path / "c.jsonl", dict(list(perfect.items())[:4]))),
                     gold=str(data_dir), out_dir=str(tmp_path / "c"), bootstrap=50))
    with pytest.raises(ValueError, match="different records.*case-4"):
        E.compare_runs(tmp_path / "a", tmp_path / "c")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 3  # InputError (docs/exit-codes.md)
    assert "different records" in capsys.readouterr().err


def test_model_run_with_tiny_base_handles_garbage(tiny_base_dir, data_dir, tmp_path):
    bench = tmp_path / "bench.json"
    E.create_benchmark(data_dir, bench, n=4, seed=2)
    out = tmp_path / "run"
    assert main(["evaluate", "--model", str(tiny_base_dir), "--data", str(data_dir), "--benchmark", str(bench),
                 "--out", str(out), "--batch-size", "2", "--max-new-tokens", "16", "--device", "cpu",
                 "--bootstrap", "100"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert m["n"] == 4 and len(rows) == 4 and m["run"]["generated_tokens"] == sum(r["generated_tokens"] for r in rows)
    assert all(1 <= r["generated_tokens"] <= 16 for r in rows)
    # a random model writes no valid code line: the failures are counted, not fatal
    assert m["parse_failure_rate"] == sum(r["parsed_line"] == ", " for r in rows) / 4
    assert all(r["parse_issues"] for r in rows if r["parsed_line"] == ", ")
    for name in ("report.md", "metrics.png"):
        assert (out / name).stat().st_size > 0


def test_model_run_with_peft_adapter(tiny_base_dir, data_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from nyxmed.generation import load_transformers

    base, tok = load_transformers(str(tiny_base_dir), device="cpu")
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
                   ).save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    m = E.run(EvalConfig(model=str(tiny_base_dir), adapter=str(tmp_path / "adapter"), data=str(data_dir),
                         out_dir=str(tmp_path / "run"), max_new_tokens=8, device="cpu", bootstrap=50))
    assert m["n"] == 6 and m["run"]["adapter"] == str(tmp_path / "adapter")
    assert (tmp_path / "run" / "predictions.jsonl").exists()


def test_model_run_over_http_endpoint(data_dir, tmp_path):
    from test_generation import CannedChat  # tests/ is on sys.path (pytest rootdir conftest)

    cases = make_cases()
    server = ThreadingHTTPServer(("127.0.0.1", 0), CannedChat)
    server.answers = {f"{c.exam_description}\n{c.report_text}": c.codes.render() for c in cases}
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        m = E.run(EvalConfig(model="nyxmed-v17", backend="openai", endpoint=url,
                             data=str(data_dir), out_dir=str(tmp_path / "run"), bootstrap=50))
    finally:
        server.shutdown()
        server.server_close()
    assert m["all_three_exact"] == 1.0 and m["icd_macro_f1_code"] == 1.0 and m["run"]["generated_tokens"] == 6 * 7
    assert len(server.requests) == 6
    assert m["run"]["endpoint"] == url and f"| endpoint | {url} |" in (tmp_path / "run" / "report.md").read_text()


def test_model_run_against_a_closed_port_stops_before_generating(data_dir, tmp_path):
    from test_generation import _closed_port

    from nyxmed.errors import RemoteError

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(RemoteError, match=f"^cannot reach {url}/models: .*Connection refused"):
        E.run(EvalConfig(model="nyxmed-v17", backend="openai", endpoint=url, data=str(data_dir),
                         out_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_model_run_needs_prompts(tmp_path):
    from nyxmed.sources import write_cases

    gold = write_cases(make_cases(), tmp_path / "gold.jsonl")
    with pytest.raises(ValueError, match="no 'system'/'user' prompt"):
        E.run(EvalConfig(model="m", data=str(gold), out_dir=str(tmp_path / "o")))


@pytest.mark.slow
def test_end_to_end_on_a_really_built_dataset(tiny_base_dir, tiny_tokenizer, tmp_path):
    """The builder's folder and case files feed the evaluator; a model run and its rescoring agree."""
    from nyxmed.config import Recipe
    from nyxmed.dataset import build_dataset
    from nyxmed.synth import generate_cases

    recipe = Recipe(name="e2e")
    recipe.data.out_dir = str(tmp_path / "data")
    recipe.data.heldout_size, recipe.data.val_size = 12, 5
    recipe.retrieval.dense, recipe.retrieval.n_shots = False, 1
    built = build_dataset(recipe, tiny_tokenizer, generate_cases(80, 3), progress=False)
    bench = E.create_benchmark(built.out_dir, tmp_path / "bench.json", n=6, seed=17)
    heldout_file = built.out_dir / "cases" / "heldout.jsonl"
    assert E.create_benchmark(heldout_file, tmp_path / "b2.json", n=6, seed=17)["records"] == bench["records"]
    run = E.run(EvalConfig(model=str(tiny_base_dir), data=str(built.out_dir), benchmark=str(tmp_path / "bench.json"),
                           out_dir=str(tmp_path / "run"), max_new_tokens=8, batch_size=3, device="cpu", bootstrap=100))
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in bench["records"]]
    write_preds(tmp_path / "p.jsonl", {r["id"]: r["output"] for r in rows})
    again = E.run(EvalConfig(predictions=str(tmp_path / "p.jsonl"), gold=str(heldout_file),
                             benchmark=str(tmp_path / "bench.json"), out_dir=str(tmp_path / "rescored"), bootstrap=100))
    assert {k: run[k] for k in E.metrics.AGGREGATE_METRICS} == {k: again[k] for k in E.metrics.AGGREGATE_METRICS}
    assert run["ci95"] == again["ci95"]


def test_compare_rescores_with_each_runs_cpt_table(data_dir, tmp_path):
    from nyxmed.codes import icd10cm
    from nyxmed.errors import NotFound, VerificationError

    table = tmp_path / "cpt.csv"  # a licensed table without 70450 (case-5's gold CPT)
    table.write_text("code,description\n" + "".join(f"{g[0][0]},licensed\n" for g in GOLD if g[0][0] != "70450"))
    perfect = {f"case-{i}": CodeLine.of(*g[:3]).render() for i, g in enumerate(GOLD)}
    off = {**perfect, "case-1": "73722, RT, M25.561"}  # a CPT of valid shape the table does not list
    runs = {}
    for name, outputs in (("a", perfect), ("b", off)):
        runs[name] = E.run(EvalConfig(predictions=str(write_preds(tmp_path / f"{name}.jsonl", outputs)),
                                      gold=str(data_dir), out_dir=str(tmp_path / name), cpt_table=str(table),
                                      bootstrap=20))
    assert runs["a"]["run"]["cpt_table"]["sha256"] == runs["b"]["run"]["cpt_table"]["sha256"]
    assert runs["a"]["run"]["icd10cm_release"] == icd10cm.release_name()
    shape_only = E.run(EvalConfig(predictions=str(tmp_path / "a.jsonl"), gold=str(data_dir),
                                  out_dir=str(tmp_path / "shape"), bootstrap=20))
    assert shape_only["invalid_code_rate"] == 0 < runs["a"]["invalid_code_rate"] < runs["b"]["invalid_code_rate"]

    row = E.compare_runs(tmp_path / "a", tmp_path / "b", resamples=50)["metrics"]["invalid_code_rate"]
    for side in ("a", "b"):
        on_disk = json.loads((tmp_path / side / "metrics.json").read_text())
        assert row[side] == pytest.approx(on_disk["invalid_code_rate"]), side

    table.write_text(table.read_text() + "70450,licensed\n")
    with pytest.raises(VerificationError, match=r"cpt\.csv.*changed since the run was scored"):
        E.compare_runs(tmp_path / "a", tmp_path / "b")
    table.unlink()
    with pytest.raises(NotFound, match=r"cpt\.csv.*which is gone"):
        E.load_run(tmp_path / "b")
    assert E.load_run(tmp_path / "shape").n == 6  # a run scored without a table needs none


def test_run_and_benchmark_record_the_icd_release(data_dir, tmp_path):
    from nyxmed.codes import icd10cm
    from nyxmed.errors import VerificationError

    manifest = E.create_benchmark(data_dir, tmp_path / "bench.json", n=3)
    assert manifest["icd10cm_release"] == icd10cm.release_name()
    E.run(EvalConfig(predictions=str(write_preds(tmp_path / "p.jsonl", half_right())), gold=str(data_dir),
                     out_dir=str(tmp_path / "run"), bootstrap=20))
    assert f"| icd10cm_release | {icd10cm.release_name()} |" in (tmp_path / "run" / "report.md").read_text()
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    m["run"]["icd10cm_release"] = "icd10cm_tabular_2099.xml"  # scored under another release than the loaded one
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(VerificationError, match="icd10cm_tabular_2099.xml"):
        E.load_run(tmp_path / "run")
