"""Merge: sharded output loadable without PEFT, verification that catches a bad merge, base checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from nyxmed import merge as merge_mod
from nyxmed.merge import (BaseMismatchError, MergeError, MergeVerificationError, base_fingerprint, check_adapter_base,
                          merge_adapter, resolve_base)


def _prompt_ids(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "CT abdomen pelvis with contrast pain"}],
                                         tokenize=False, add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)


@pytest.fixture(scope="module")
def merged_fp32(tmp_path_factory, tiny_base_dir, tiny_adapter_dir):
    out = tmp_path_factory.mktemp("merged") / "m"
    manifest = merge_adapter(str(tiny_base_dir), tiny_adapter_dir, out, dtype="float32", max_shard_size="100KB")
    return out, manifest


def test_merged_folder_is_sharded_and_complete(merged_fp32, tiny_base_dir, tiny_adapter_dir):
    out, manifest = merged_fp32
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 3
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        assert (out / name).is_file(), name
    assert not any("lora" in k for k in index["weight_map"])  # merged, not an adapter
    on_disk = json.loads((out / "merge_manifest.json").read_text())
    assert on_disk["base"]["fingerprint"] == base_fingerprint(tiny_base_dir)
    assert on_disk["adapter"]["checksum"].startswith("sha256:")
    assert on_disk["dtype"] == "float32" and on_disk["versions"]["peft"]
    assert on_disk["verification"]["ok"] and on_disk["verification"]["probes"] == len(merge_mod.PROBES)
    assert on_disk["files"]["config.json"]["sha256"] == merge_mod.sha256_file(out / "config.json")
    assert not list(out.parent.glob(".*.tmp"))


def test_merged_loads_without_peft_and_matches_base_plus_adapter(merged_fp32, tiny_base_dir, tiny_adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = merged_fp32
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(merged).__name__ == "LlamaForCausalLM"
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base_dir), tiny_adapter_dir).eval()
    plain_base = AutoModelForCausalLM.from_pretrained(tiny_base_dir).eval()
    batch = _prompt_ids(tokenizer)
    with torch.no_grad():
        got, want, base_logits = (m(**batch).logits for m in (merged, reference, plain_base))
        assert torch.allclose(got, want, atol=1e-4)
        assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter really changed the model
        gen = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        assert torch.equal(merged.generate(**batch, **gen), reference.generate(**batch, **gen))


def test_cli_merge_bfloat16_default(tmp_path, tiny_base_dir, tiny_adapter_dir, capsys):
    from nyxmed.cli import main

    out = tmp_path / "bf16"
    assert main(["merge", "--base", str(tiny_base_dir), "--adapter", str(tiny_adapter_dir), "--out", str(out),
                 "--max-shard-size", "100KB", "--max-new-tokens", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["verification"]["ok"] is True
    assert json.loads((out / "merge_manifest.json").read_text())["dtype"] == "bfloat16"
    with safe_open(next(out.glob("model-*.safetensors")), "pt") as fh:
        assert fh.get_tensor(next(iter(fh.keys()))).dtype == torch.bfloat16


def test_corrupted_merge_fails_loudly_and_writes_nothing(tmp_path, tiny_base_dir, tiny_adapter_dir, monkeypatch):
    real = merge_mod._merge_in_place

    def perturbed(peft_model):
        model = real(peft_model)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight[0, :8] += 0.5
        return model

    monkeypatch.setattr(merge_mod, "_merge_in_place", perturbed)
    out = tmp_path / "bad"
    with pytest.raises(MergeVerificationError, match="max \\|logit diff\\|"):
        merge_adapter(str(tiny_base_dir), tiny_adapter_dir, out, dtype="float32", max_new_tokens=4)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_compare_flags_greedy_flip_and_tolerance():
    ref = torch.tensor([[[5.0, 1.0, 0.0], [0.0, 3.0, 1.0]]])
    valid = torch.tensor([[True, True]])
    assert merge_mod.compare(ref, ref + 1e-6, valid, torch.float32).ok
    flipped = ref.clone()
    flipped[0, 1] = torch.tensor([0.0, 1.0, 3.0])
    check = merge_mod.compare(ref, flipped, valid, torch.float32)
    assert not check.greedy_identical and check.mismatched_probes == (0,) and not check.ok
    assert not merge_mod.compare(ref, ref + 0.01, valid, torch.float32).ok  # beyond fp32 tolerance
    assert merge_mod.compare(ref, ref + 0.01, valid, torch.bfloat16).ok


def test_base_mismatch_is_an_error_before_loading(tmp_path, tiny_tokenizer, tiny_adapter_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from nyxmed.tiny import build_tiny_model, save_base

    other = save_base(build_tiny_model(tiny_tokenizer, seed=5), tiny_tokenizer, tmp_path / "other")

    def no_load(*a, **k):
        raise AssertionError("weights were loaded before the base check")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(BaseMismatchError, match="base_model_name_or_path is .*but --base is"):
        merge_adapter(str(other), tiny_adapter_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_recorded_fingerprint_decides(tmp_path, tiny_base_dir, tiny_adapter_dir):
    copy = Path(shutil.copytree(tiny_base_dir, tmp_path / "copy"))
    check_adapter_base(tiny_adapter_dir, resolve_base(str(copy)))  # same bytes, other path: the same base
    adapter = Path(shutil.copytree(tiny_adapter_dir, tmp_path / "adapter"))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_fingerprint"] = "sha256:" + "0" * 64
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BaseMismatchError, match="fingerprint"):
        check_adapter_base(adapter, resolve_base(str(tiny_base_dir)))


def test_hub_snapshot_base_and_revision(tmp_path, tiny_base_dir, tiny_adapter_dir):
    rev = "a" * 40
    snap = Path(shutil.copytree(tiny_base_dir, tmp_path / "models--meta-llama--Tiny-3" / "snapshots" / rev))
    adapter = Path(shutil.copytree(tiny_adapter_dir, tmp_path / "adapter"))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg.update(base_model_name_or_path="meta-llama/Tiny-3", revision=rev)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    base = resolve_base(str(snap))
    assert (base.repo_id, base.revision) == ("meta-llama/Tiny-3", rev)
    check_adapter_base(adapter, base)
    cfg["revision"] = "b" * 40
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BaseMismatchError, match="revision"):
        check_adapter_base(adapter, base)


def test_bad_inputs_name_the_problem(tmp_path, tiny_base_dir, tiny_adapter_dir):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(MergeError, match="not empty"):
        merge_adapter(str(tiny_base_dir), tiny_adapter_dir, tmp_path / "out")
    probes = tmp_path / "p.jsonl"
    probes.write_text('{"system": "s", "user": "ok"}\n{"system": "s"}\n')
    with pytest.raises(MergeError, match="p.jsonl:2: field 'user'"):
        merge_adapter(str(tiny_base_dir), tiny_adapter_dir, tmp_path / "o2", probes=probes)
    with pytest.raises(MergeError, match="not a PEFT adapter"):
        merge_adapter(str(tiny_base_dir), tmp_path, tmp_path / "o3")


def test_training_records_the_base_fingerprint_and_merge_refuses_another_base(tmp_path, tiny_tokenizer,
                                                                               tiny_base_dir):
    """A tiny in-process training run writes the base fingerprint and the ICD-10-CM release; the
    merge accepts that base, records the release, and refuses a base with other weights."""
    from training_data import build_dataset

    from nyxmed.codes import icd10cm
    from nyxmed.config import load_recipe
    from nyxmed.errors import VerificationError
    from nyxmed.tiny import build_tiny_model, save_base
    from nyxmed.training import train

    data = build_dataset(tiny_tokenizer, tmp_path / "data")
    out = tmp_path / "run"
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "configs/tiny.yaml", [
        f"model.base_model={tiny_base_dir}", f"train.dataset_dir={data}", f"train.output_dir={out}",
        "train.max_steps=2", "train.eval_steps=2", "train.save_steps=2"])
    train(recipe)
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert metrics["base_model_fingerprint"] == base_fingerprint(tiny_base_dir)
    assert metrics["icd10cm_release"] == icd10cm.release_name()

    manifest = merge_adapter(str(tiny_base_dir), out, tmp_path / "merged", dtype="float32", max_new_tokens=4)
    assert manifest["icd10cm_release"] == icd10cm.release_name()
    # Same config and tokenizer, other weights: refused before loading, both fingerprints named.
    other = save_base(build_tiny_model(tiny_tokenizer, seed=5), tiny_tokenizer, tmp_path / "other")
    with pytest.raises(VerificationError) as err:
        merge_adapter(str(other), out, tmp_path / "merged2")
    assert metrics["base_model_fingerprint"] in str(err.value) and base_fingerprint(other) in str(err.value)
    assert not (tmp_path / "merged2").exists()


def test_no_recorded_fingerprint_warns_and_checks_by_name(tiny_base_dir, tiny_adapter_dir, caplog):
    with caplog.at_level("WARNING", logger="nyxmed.merge"):
        check_adapter_base(tiny_adapter_dir, resolve_base(str(tiny_base_dir)))
    assert "no base_model_fingerprint recorded" in caplog.text
