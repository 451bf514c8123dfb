"""Shared fixtures: a locally built Llama-3-style tokenizer and a tiny Llama base (no downloads)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _corpus() -> list[str]:
    """Radiology words and real codes, enough for a byte-level BPE to learn useful merges."""
    from nyxmed.codes import icd10cm

    words = ("CT abdomen pelvis with contrast without MRI brain knee ultrasound duplex venous lower "
             "extremity bilateral left right chest radiograph two views findings impression no acute "
             "abnormality fracture pain mass nodule effusion reason for exam exam description")
    codes = " ".join(icd10cm.all_billable()[::400])
    return [words, codes, "74177, 26, R10.84, K57.30", "73721, RT 26, M25.561", "93970, , I83.93"] * 20


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from nyxmed.tiny import build_tokenizer

    return build_tokenizer(_corpus(), vocab_size=512)


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Llama base folder (model + tokenizer + generation config)."""
    from nyxmed.tiny import build_tiny_model, save_base

    out = tmp_path_factory.mktemp("tiny_base")
    return save_base(build_tiny_model(tiny_tokenizer, seed=0), tiny_tokenizer, out)


@pytest.fixture(scope="session")
def pg_dsn():
    """DSN of a real PostgreSQL server; CI must have one, so there it fails instead of skipping."""
    dsn = os.environ.get("NYXMED_PG_DSN")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but NYXMED_PG_DSN is not set: .ci/run must start PostgreSQL")
        pytest.skip("NYXMED_PG_DSN not set (no PostgreSQL server)")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=5):
            pass
    except Exception as exc:  # a server that is not there is a failure in CI, a skip elsewhere
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at NYXMED_PG_DSN is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    return dsn


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(base_dir, out_dir, seed: int = 1):
    """A PEFT LoRA adapter (r=8, all projections) on ``base_dir`` with random nonzero A and B."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_adapter_dir(tmp_path_factory, tiny_base_dir):
    """A saved LoRA adapter folder for ``tiny_base_dir`` (nonzero LoRA B, so merging changes weights)."""
    return make_adapter(tiny_base_dir, tmp_path_factory.mktemp("tiny_adapter"))


def make_trained_adapter(base_dir, out_dir, epochs: int = 2):
    """The trainer's output layout around a real adapter: adapter files, tokenizer, config.yaml,
    training_metrics.json and ``frozen/epoch-N/`` (an adapter + frozen.json with sha256 per file)."""
    import hashlib
    import json
    from pathlib import Path

    import yaml

    out = Path(out_dir)
    make_adapter(base_dir, out, seed=1)
    for n in range(1, epochs + 1):
        frozen = make_adapter(base_dir, out / "frozen" / f"epoch-{n}", seed=10 + n)
        sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(frozen.iterdir())}
        (frozen / "frozen.json").write_text(json.dumps({"step": 10 * n, "epoch": float(n),
                                                        "eval_loss": 2.0 - 0.1 * n, "sha256": sums}))
    (out / "config.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "model": {"base_model": str(base_dir), "dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": LORA_TARGETS},
        "train": {"learning_rate": 1e-3, "epochs": 2.0, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
                  "lr_scheduler": "cosine"}}))
    (out / "training_metrics.json").write_text(json.dumps({
        "stop_reason": "early_stopping", "global_step": 20, "best_step": 10, "best_eval_loss": 1.9,
        "eval_loss_curve": [{"step": 10, "eval_loss": 1.9}, {"step": 20, "eval_loss": 1.95}],
        "effective_batch_size": 2, "tokens_seen": 12345}))
    return out


@pytest.fixture(scope="session")
def trained_adapter_dir(tmp_path_factory, tiny_base_dir):
    """A trainer-style output folder (adapter, config.yaml, training_metrics.json, frozen/epoch-1..2)."""
    return make_trained_adapter(tiny_base_dir, tmp_path_factory.mktemp("trained"))
