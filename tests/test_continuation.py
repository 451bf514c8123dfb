"""The next version on top of the last: v1 trained and released, v2 trained from ``release:`` with
primary-ICD corrections weighted, lineage and comparison in the release, rollback codes with v1."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from nyxmed.codeline import CodeLine
from nyxmed.config import load_recipe
from nyxmed.dataset import build_dataset
from nyxmed.io import sha256_file
from nyxmed.synth import generate_cases

ROOT = Path(__file__).resolve().parents[1]


TINY = str(ROOT / "configs/tiny.yaml")


def _overrides(tmp: Path, name: str, base: str, *extra: str) -> list[str]:
    return [f"name={name}", f"model.base_model={base}", f"model.merge_cache={tmp / 'merged'}",
            f"data.out_dir={tmp / name / 'data'}", "data.heldout_size=16", "data.val_size=4",
            "retrieval.n_shots=1", "prompt.max_length=4096", f"train.dataset_dir={tmp / name / 'data' / 'dataset'}",
            f"train.output_dir={tmp / name / 'adapter'}", "train.max_steps=2", "train.eval_steps=2",
            "train.save_steps=2", "train.report_to=[]", "train.gradient_checkpointing=false",
            "eval.dtype=float32", "eval.device=cpu", "eval.batch_size=8", "eval.max_new_tokens=8",
            "eval.bootstrap=50", *extra]


def _recipe(tmp: Path, name: str, base: str, *extra: str):
    return load_recipe(TINY, _overrides(tmp, name, base, *extra))


def _primary_corrections(cases):
    """Every other case with two or more ICD codes gets an original line whose primary code was the second."""
    out = []
    for i, c in enumerate(cases):
        if len(c.codes.icd) >= 2 and c.original_codes is None and i % 2 == 0:
            icd = c.codes.icd
            c = dataclasses.replace(c, original_codes=CodeLine.of(c.codes.cpt, c.codes.modifiers,
                                                                   [icd[1], icd[0], *icd[2:]]))
        out.append(c)
    return out


def test_v2_from_the_v1_release_records_lineage_compares_and_rolls_back(capsys, tmp_path, tiny_tokenizer, tiny_base_dir,
                                                                       monkeypatch):
    from nyxmed.coder import load_coder, release_parts
    from nyxmed.releases import LocalRegistry
    from nyxmed.releases import parent as parent_mod
    from nyxmed.releases.publish import CardInputs, publish
    from nyxmed.sources import write_cases
    from nyxmed.training.run import train

    cases = generate_cases(120, 11)
    registry = LocalRegistry(tmp_path / "registry")

    # v1 on the plain tiny base
    r1 = _recipe(tmp_path, "v1", str(tiny_base_dir))
    built1 = build_dataset(r1, tiny_tokenizer, cases[:60], progress=False)
    train(r1)
    v1_dir = Path(r1.train.output_dir)
    assert json.loads((v1_dir / "training_metrics.json").read_text())["parent"] is None
    publish(v1_dir, "v1", registry, tmp_path / "staging" / "v1")
    registry.promote("v1")
    v1 = registry.release("v1")
    assert "parent" not in v1 and "training_records.jsonl" in v1["files"]
    trained_v1 = {r["id"] for r in map(json.loads, (built1.out_dir / "records.jsonl").read_text().splitlines())
                  if r["split"] == "train"}

    # v2 from release: (production = v1), primary corrections weighted, the retained set holds v1's training cases
    from transformers import AutoTokenizer

    retained = tmp_path / "retained.jsonl"
    write_cases([c for c in cases[:60] if c.id in trained_v1][:10] + cases[110:], retained)
    spec = f"release:{registry.root}"
    # the parent's preprocessor by default: the same prompts machinery, the same id
    reuse = _recipe(tmp_path, "v2-reuse", spec)
    reused = build_dataset(reuse, AutoTokenizer.from_pretrained(parent_mod.tokenizer_source(reuse.model)),
                           cases[60:90], progress=False)
    assert reused.manifest["preprocessor_id"] == v1["preprocessor"]["id"]
    # v2 builds a new preprocessor, which ships with its adapter
    v2_keys = _overrides(tmp_path, "v2", spec, "data.primary_weight=4", f"data.retained=[{retained}]",
                         "data.preprocessor=new", f"eval.data={tmp_path / 'v2' / 'data' / 'dataset'}")
    r2 = load_recipe(TINY, v2_keys)
    tokenizer = parent_mod.tokenizer_source(r2.model)
    assert tokenizer == str(registry.path("v1"))  # the release carries its tokenizer: no merge for build-data
    built2 = build_dataset(r2, AutoTokenizer.from_pretrained(tokenizer), _primary_corrections(cases[60:110]),
                           progress=False)
    counts, weights = built2.manifest["counts"], built2.manifest["weights"]
    assert counts["by_role"]["primary"] > 0 and weights["primary"] == 4.0
    assert counts["retained_filtered_by_previous_manifest"] == 10  # data.previous_manifest defaulted to v1's
    previous = next(s for s in built2.manifest["sources"] if s["role"] == "previous_manifest")
    assert previous["sha256"] == v1["files"]["training_records.jsonl"]["sha256"]
    train_rows = built2.dataset["train"]
    primary = [w for role, w in zip(train_rows["role"], train_rows["weight"]) if role == "primary"]
    assert primary and set(primary) == {4.0}

    from nyxmed.cli import main

    with pytest.raises(Exception, match="names a release"):  # the library entry needs the resolved parent
        train(r2)
    assert main(["train", "--config", TINY, *v2_keys]) == 0  # the launcher resolves release: (merge, cached)
    v2_dir = Path(r2.train.output_dir)
    metrics = json.loads((v2_dir / "training_metrics.json").read_text())
    parent = metrics["parent"]
    assert parent["version"] == "v1"
    assert parent["adapter_sha256"] == v1["files"]["adapter_model.safetensors"]["sha256"]
    merged = parent_mod.release_of(spec, r2.model.merge_cache, r2.model.dtype).model_dir
    assert (merged / "merge_manifest.json").is_file() and parent["merged_fingerprint"] == \
        metrics["base_model_fingerprint"]
    assert parent["base_model_fingerprint"] == json.loads((v1_dir / "training_metrics.json").read_text())[
        "base_model_fingerprint"]

    def no_merge(*a, **k):
        raise AssertionError("the cached merge must be reused")

    monkeypatch.setattr("nyxmed.merge.merge_adapter", no_merge)
    resolved = parent_mod.resolve_parent(spec, r2.model.merge_cache, r2.model.dtype)
    assert resolved.model_dir == merged

    # parent vs child on the same records, paired CIs, from the child's recipe; stored in the release and its card
    assert main(["compare-parent", "--config", TINY, *v2_keys, "--out", str(tmp_path / "compare")]) == 0
    assert "| all_three_exact |" in capsys.readouterr().out
    comparison = json.loads((tmp_path / "compare" / "comparison.json").read_text())
    assert comparison["n"] == len(built2.dataset["heldout"]) and "all_three_exact" in comparison["metrics"]
    # `evaluate` with the recipe's release: base scores the parent's merged model: the same outputs
    assert main(["evaluate", "--config", TINY, *v2_keys, "--out", str(tmp_path / "parent-eval")]) == 0
    assert (tmp_path / "parent-eval" / "predictions.jsonl").read_text() == \
        (tmp_path / "compare" / "parent" / "predictions.jsonl").read_text()
    # a child trained on another parent (v1 has none) is refused: its delta would not be this release's
    assert main(["compare-parent", "--config", TINY, *v2_keys, f"--adapter={v1_dir}",
                 "--out", str(tmp_path / "wrong")]) == 2
    assert "trained on parent None" in capsys.readouterr().err and not (tmp_path / "wrong").exists()
    publish(v2_dir, "v2", registry, tmp_path / "staging" / "v2",
            inputs=CardInputs(compare=str(tmp_path / "compare" / "comparison.json")))
    v2 = registry.release("v2")
    assert v2["parent"]["version"] == "v1" and v2["parent"]["adapter_sha256"] == parent["adapter_sha256"]
    stored = json.loads((registry.path("v2") / "comparison.json").read_text())
    assert stored["metrics"]["all_three_exact"]["diff"] == comparison["metrics"]["all_three_exact"]["diff"]
    assert "a" not in stored and "parent" not in stored  # numbers only: no paths, no text
    card = (registry.path("v2") / "README.md").read_text()
    assert "## Comparison with v1" in card and "## Lineage" in card and parent["adapter_sha256"] in card
    registry.promote("v2")
    rows = {r["version"]: r for r in parent_mod.lineage_rows(registry)}
    assert (rows["v1"]["parent"], rows["v2"]["parent"], rows["v2"]["production"]) == (None, "v1", True)

    assert main(["releases", "--registry", str(registry.root), "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if " v2 " in line]
    assert listed and " v1 " in listed[0]  # the parent column

    # rolling back v2 -> v1 codes with v1's adapter and preprocessor
    registry.rollback()
    parts = release_parts(registry)
    assert parts.version == "v1"
    coder = load_coder(release=str(registry.root), dtype="float32", device="cpu", max_new_tokens=4)
    assert coder.describe() == {"version": "v1", "preprocessor_id": v1["preprocessor"]["id"], "constrained": None,
                                "adapter_sha256": v1["files"]["adapter_model.safetensors"]["sha256"]}
    assert coder.preprocessor.id != registry.release("v2")["preprocessor"]["id"]
    assert sha256_file(registry.path("v1") / "adapter_model.safetensors") == coder.adapter_sha256


def test_release_spec_parsing_and_errors(tmp_path):
    from nyxmed.config import ModelConfig
    from nyxmed.errors import NotFound, UsageError
    from nyxmed.releases import LocalRegistry
    from nyxmed.releases.parent import parse_release_spec, release_of, tokenizer_source

    assert parse_release_spec("release:out/registry") == ("out/registry", None)
    assert parse_release_spec("release:out/registry:v17") == ("out/registry", "v17")
    assert parse_release_spec("meta-llama/Meta-Llama-3-70B-Instruct") is None
    assert release_of("/models/base") is None
    assert tokenizer_source(ModelConfig(base_model="/models/base")) == "/models/base"
    with pytest.raises(UsageError, match="release:REGISTRY"):
        parse_release_spec("release::v1")
    with pytest.raises(UsageError, match="no registry folder"):
        release_of(f"release:{tmp_path / 'absent'}")
    assert not (tmp_path / "absent").exists()  # a typo never creates an empty registry
    LocalRegistry(tmp_path / "empty")
    with pytest.raises(NotFound, match="no production version"):
        release_of(f"release:{tmp_path / 'empty'}")


def test_the_continuation_gate_promotes_only_without_a_regression_beyond_the_ci():
    from nyxmed.demo_continue import GATE, ContinuationDemo

    def comparison(**ci):
        return {"metrics": {m: {"diff_ci95": ci.get(m, [-0.05, 0.04])} for m in (*GATE, "icd_micro_f1")}}

    assert ContinuationDemo.regressions(comparison()) == []  # worse, but within the CI
    assert ContinuationDemo.regressions(comparison(icd_root_overlap=[-0.14, -0.01])) == ["icd_root_overlap"]
    assert ContinuationDemo.regressions(comparison(icd_micro_f1=[-0.2, -0.1])) == []  # not a gate metric
    assert ContinuationDemo.regressions(comparison(cpt_exact=[None, None])) == []  # no CI: nothing to say
