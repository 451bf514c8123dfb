"""Trainer: weighted loss, batching, adapter checks, and real runs (single process; DeepSpeed ZeRO-3 on 2 CPU ranks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file, save_file

from nyxmed.config import load_recipe
from nyxmed.training.loss import IGNORE_INDEX, weighted_lm_loss
from nyxmed.io import sha256_file
from nyxmed.training import artifacts
from nyxmed.training.batching import PaddedCollator, load_training_splits
from nyxmed.training.loss import WeightedLossTrainer
from training_data import build_dataset, example

ROOT = Path(__file__).resolve().parents[1]
DEEPSPEED = Path(sys.executable).parent / "deepspeed"
# One thread per rank: two ranks that each spin OpenMP threads on a 2-core machine run 10x slower.
RUN_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
# Early-stopping scenario: validation answers are random letters (see training_data.build_dataset)
# and the LR is high, so the eval loss falls for a few steps (end of turn, generic tokens) and then
# rises as the code lines are fitted; patience 2 stops the run long before its 8 epochs (32 steps).
EARLY_STOP = ["train.learning_rate=5e-2", "train.eval_steps=2", "train.save_steps=2",
              "train.early_stopping_patience=2", "train.epochs=8"]


# ----------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_dataset(tiny_tokenizer, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def unrelated_data_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_dataset(tiny_tokenizer, tmp_path_factory.mktemp("data_unrelated"), unrelated_validation=True)


def _overrides(base_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.base_model={base_dir}", f"train.dataset_dir={data}", f"train.output_dir={out}", *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(overrides: list[str], log: Path, ranks: int, resume: bool = False) -> subprocess.Popen:
    """Start train.py (under the deepspeed launcher when ranks > 1) in its own process group."""
    script = ["train.py", "--config", "configs/tiny.yaml", *overrides, *(["--resume"] if resume else [])]
    if ranks > 1:
        cmd = [str(DEEPSPEED), "--num_gpus", str(ranks), "--master_port", str(_free_port()), *script]
    else:
        cmd = [sys.executable, *script]
    fh = open(log, "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=RUN_ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, f"training exited {rc}:\n{log.read_text()[-4000:]}"


def _base_and_adapter(base_dir: Path, adapter_dir: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval()


def _eval_loss(model, dataset_dir: Path, ranks: int) -> float:
    """The Trainer's eval loss recomputed by hand: each step takes one example per rank, its loss is
    sum w*l / sum w*n over those examples, and the steps are averaged."""
    val = load_from_disk(str(dataset_dir))["validation"]
    parts = []
    with torch.no_grad():
        for row in val:
            ids = torch.tensor([row["input_ids"]])
            total, count = weighted_lm_loss(model(input_ids=ids).logits, torch.tensor([row["labels"]]),
                                            torch.full(ids.shape, float(row["weight"])))
            parts.append((total.item(), count.item()))
    steps = [parts[i:i + ranks] for i in range(0, len(parts), ranks)]
    return sum(sum(t for t, _ in s) / sum(c for _, c in s) for s in steps) / len(steps)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / artifacts.ADAPTER_WEIGHTS))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


def _check_finished_folder(out: Path, lora_r: int) -> dict:
    """The artifacts every finished run has; returns training_metrics.json."""
    complete = json.loads((out / artifacts.COMPLETE).read_text())
    for name, digest in complete["sha256"].items():
        assert sha256_file(out / name) == digest, name
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training_metrics.json",
                 "config.yaml", "loss_curves.png"):
        assert name in complete["sha256"], name
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "logs").iterdir())
    tensors = _adapter(out)
    assert tensors and all(t.numel() > 0 for t in tensors.values())
    assert all(t.shape[0] == lora_r for k, t in tensors.items() if "lora_A" in k)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k), "lora_B never trained"
    return json.loads((out / "training_metrics.json").read_text())


# ----------------------------------------------------------------------------- loss and batching
def _features(tokenizer, weights: list[float]) -> list[dict]:
    pairs = [("MRI brain without contrast reason pain", "70551, , R51.9"),
             ("CT abdomen pelvis with contrast reason mass nodule", "74177, 26, R10.84, K57.30")]
    out = []
    for (user, answer), w in zip(pairs, weights):
        ids, labels = example(tokenizer, user, answer)
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "weight": w})
    return out


def test_collator_right_pads_and_spreads_weight(tiny_tokenizer):
    feats = _features(tiny_tokenizer, [3.0, 1.0])
    batch = PaddedCollator(tiny_tokenizer.pad_token_id)(feats)
    n0, n1 = (len(f["input_ids"]) for f in feats)
    assert n0 < n1 and batch["input_ids"].shape == (2, n1)
    assert batch["input_ids"][0, n0:].eq(tiny_tokenizer.pad_token_id).all()
    assert batch["attention_mask"][0, n0:].eq(0).all() and batch["labels"][0, n0:].eq(IGNORE_INDEX).all()
    assert batch["token_weights"][0, :n0].eq(3.0).all() and batch["token_weights"][0, n0:].eq(0).all()
    assert batch["input_ids"][0, :n0].tolist() == feats[0]["input_ids"]


def _trainer(model, tmp_path, tokenizer, **kw) -> WeightedLossTrainer:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "ckpt"), report_to=[], remove_unused_columns=False,
                             per_device_train_batch_size=1, use_cpu=True, **kw)
    return WeightedLossTrainer(model=model, args=args, data_collator=PaddedCollator(tokenizer.pad_token_id))


def test_weight_three_counts_like_three_copies(tiny_tokenizer, tiny_base_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32).eval()
    trainer = _trainer(model, tmp_path, tiny_tokenizer)
    collate = PaddedCollator(tiny_tokenizer.pad_token_id)
    a, b = _features(tiny_tokenizer, [1.0, 1.0])
    with torch.no_grad():
        weighted = trainer.compute_loss(model, collate([{**a, "weight": 3.0}, b]))
        copies = trainer.compute_loss(model, collate([a, a, a, b]))
        # By hand: per-token cross-entropy of each example alone, no padding involved.
        sums, counts = [], []
        for f in (a, b):
            logits = model(input_ids=torch.tensor([f["input_ids"]])).logits[0, :-1]
            target = torch.tensor(f["labels"][1:])
            mask = target != IGNORE_INDEX
            sums.append(torch.nn.functional.cross_entropy(logits[mask], target[mask], reduction="sum").item())
            counts.append(int(mask.sum()))
    manual = (3 * sums[0] + sums[1]) / (3 * counts[0] + counts[1])
    assert weighted.item() == pytest.approx(manual, rel=1e-5)
    assert copies.item() == pytest.approx(manual, rel=1e-5)
    # The unweighted token mean differs, so the weight really acts.
    assert abs((sums[0] + sums[1]) / (counts[0] + counts[1]) - manual) > 1e-3


def test_accumulated_micro_batches_equal_one_batch(tiny_tokenizer, tiny_base_dir, tmp_path):
    """Two micro-batches normalised by the step's weighted count give the gradient of one full batch."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32)
    trainer = _trainer(model, tmp_path, tiny_tokenizer, gradient_accumulation_steps=2)
    collate = PaddedCollator(tiny_tokenizer.pad_token_id)
    a, b = _features(tiny_tokenizer, [3.0, 1.0])
    micro = [collate([a]), collate([b])]
    count = trainer._get_num_items_in_batch(micro, torch.device("cpu"))
    model.zero_grad()
    for m in micro:
        trainer.compute_loss(model, dict(m), num_items_in_batch=count).backward()
    accumulated = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    trainer.compute_loss(model, collate([a, b])).backward()
    for g, p in zip(accumulated, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_dataset_checks_name_record_and_field(tiny_tokenizer, tmp_path):
    data = build_dataset(tiny_tokenizer, tmp_path / "d")
    train, val = load_training_splits(data, max_length=2560)
    assert train.column_names == ["input_ids", "attention_mask", "labels", "weight"] and len(val) == 4
    longest = max(len(r) for r in train["input_ids"])
    with pytest.raises(ValueError, match=r"record train-\d+: field input_ids has \d+ tokens > prompt.max_length"):
        load_training_splits(data, max_length=longest - 1)
    with pytest.raises(FileNotFoundError, match="train.dataset_dir"):
        load_training_splits(tmp_path / "missing", max_length=2560)


def test_verify_adapter_rejects_empty_and_partial_tensors(tmp_path):
    """The ZeRO-3 pitfall: an adapter saved from shards without a gather has empty tensors."""
    expected = {"base_model.model.layer.q_proj.lora_A.weight": (4, 8),
                "base_model.model.layer.q_proj.lora_B.weight": (8, 4)}
    (tmp_path / artifacts.ADAPTER_CONFIG).write_text("{}")
    good = {"base_model.model.layer.q_proj.lora_A.weight": torch.randn(4, 8),
            "base_model.model.layer.q_proj.lora_B.weight": torch.zeros(8, 4)}
    save_file(good, str(tmp_path / artifacts.ADAPTER_WEIGHTS))
    assert artifacts.verify_adapter(tmp_path, expected) == {"tensors": 2, "parameters": 64}
    for bad, match in (({**good, "base_model.model.layer.q_proj.lora_A.weight": torch.empty(0)}, "has shape"),
                       ({**good, "base_model.model.layer.q_proj.lora_A.weight": torch.zeros(4, 8)}, "all zeros"),
                       ({"base_model.model.layer.q_proj.lora_A.weight": torch.randn(4, 8)}, "missing")):
        save_file(bad, str(tmp_path / artifacts.ADAPTER_WEIGHTS))
        with pytest.raises(artifacts.AdapterError, match=match):
            artifacts.verify_adapter(tmp_path, expected)


# ----------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_single_process_run_without_deepspeed(tiny_base_dir, data_dir, tmp_path):
    """(c) The tiny recipe in one process, no DeepSpeed: artifacts, frozen epochs, resolved config, reload."""
    out = tmp_path / "run"
    # eval every 3 steps: epoch ends (step 8, 16) fall between evaluations, so the epoch-end
    # evaluation is forced by the frozen-adapter callback.
    overrides = _overrides(tiny_base_dir, data_dir, out, "train.eval_steps=3", "train.save_steps=3")
    log = tmp_path / "train.log"
    _finish(_launch(overrides, log, ranks=1), log)
    metrics = _check_finished_folder(out, lora_r=8)
    assert metrics["stop_reason"] == "epochs_completed" and metrics["global_step"] == 16
    assert metrics["world_size"] == 1 and metrics["effective_batch_size"] == 2
    assert metrics["tokens_seen"] > 0 and metrics["tokens_per_second"] > 0 and metrics["peak_memory_rank0"]["bytes"] > 0
    manifest = data_dir.parent / "manifest.json"
    assert metrics["dataset"]["manifest_sha256"] == sha256_file(manifest)
    assert len(metrics["git"]["commit"]) == 40
    assert [p["step"] for p in metrics["eval_loss_curve"]] == [3, 6, 8, 9, 12, 15, 16]
    best = min(metrics["eval_loss_curve"], key=lambda p: p["eval_loss"])
    assert metrics["best_step"] == best["step"] and metrics["best_eval_loss"] == best["eval_loss"]
    assert load_recipe(out / "config.yaml") == load_recipe(ROOT / "configs/tiny.yaml", overrides)
    for epoch, step in ((1, 8), (2, 16)):
        folder = out / "frozen" / f"epoch-{epoch}"
        frozen = json.loads((folder / "frozen.json").read_text())
        assert (frozen["epoch"], frozen["step"]) == (epoch, step)
        assert frozen["base_model_fingerprint"] == metrics["base_model_fingerprint"]  # merge checks frozen ones too
        assert frozen["eval_loss"] == next(p["eval_loss"] for p in metrics["eval_loss_curve"] if p["step"] == step)
        for name, digest in frozen["sha256"].items():
            assert sha256_file(folder / name) == digest
        assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(frozen["sha256"])
        # Self-contained: the frozen adapter alone reproduces the eval loss it recorded.
        assert _eval_loss(_base_and_adapter(tiny_base_dir, folder), data_dir, 1) == pytest.approx(
            frozen["eval_loss"], rel=1e-5)
    reloaded = _base_and_adapter(tiny_base_dir, out)
    assert _eval_loss(reloaded, data_dir, 1) == pytest.approx(metrics["best_eval_loss"], rel=1e-5)
    assert metrics["final_eval_loss"] == pytest.approx(metrics["best_eval_loss"], rel=1e-6)
    # A second fresh run into the same folder must not mix with the first one's checkpoints.
    with pytest.raises(FileExistsError, match="--resume"):
        from nyxmed.training.run import resume_point

        resume_point(load_recipe(out / "config.yaml"), out / "checkpoints", is_writer=False)


@pytest.mark.slow
def test_deepspeed_zero3_early_stopping_kill_and_resume(tiny_base_dir, unrelated_data_dir, tmp_path):
    """(a) + (b) on 2 CPU ranks under `deepspeed --num_gpus 2` (gloo) with ZeRO-3.

    A full run stops early and saves the best step's adapter, which reproduces the eval loss on a
    fresh base. A second run of the same recipe is killed with SIGKILL after its first checkpoint
    and resumed: it reaches the same adapter.
    """
    assert DEEPSPEED.is_file(), "deepspeed launcher not installed in this environment"
    ds = "train.deepspeed=ds_configs/zero3.json"
    full = tmp_path / "full"
    cut = tmp_path / "cut"
    logs = {name: tmp_path / f"{name}.log" for name in ("full", "cut", "resume")}
    _finish(_launch(_overrides(tiny_base_dir, unrelated_data_dir, full, ds, *EARLY_STOP), logs["full"], 2),
            logs["full"])

    metrics = _check_finished_folder(full, lora_r=8)
    assert metrics["world_size"] == 2 and metrics["effective_batch_size"] == 4
    curve = metrics["eval_loss_curve"]
    assert metrics["stop_reason"] == "early_stopping", curve
    assert metrics["global_step"] < 32  # 8 epochs x 4 steps would be the full run
    best = min(curve, key=lambda p: p["eval_loss"])
    assert metrics["best_step"] == best["step"] < metrics["global_step"]
    assert all(p["eval_loss"] >= best["eval_loss"] for p in curve if p["step"] > best["step"])
    # The saved adapter is the best checkpoint's (load_best_model_at_end), not the last step's.
    saved = _adapter(full)
    assert _same(saved, _adapter(full / "checkpoints" / f"checkpoint-{best['step']}"))
    assert not _same(saved, _adapter(full / "checkpoints" / f"checkpoint-{metrics['global_step']}"), atol=1e-6)
    # Loaded onto a fresh base it reproduces the trained model's eval loss at the best step.
    reloaded = _base_and_adapter(tiny_base_dir, full)
    assert _eval_loss(reloaded, unrelated_data_dir, ranks=2) == pytest.approx(best["eval_loss"], rel=1e-5)
    assert metrics["final_eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-5)
    assert (full / "deepspeed_config.json").is_file()
    assert json.loads((full / "deepspeed_config.json").read_text())["zero_optimization"]["stage"] == 3

    # (b) the same recipe, killed (SIGKILL to the whole process group) once a checkpoint is committed.
    overrides = _overrides(tiny_base_dir, unrelated_data_dir, cut, ds, *EARLY_STOP)
    proc = _launch(overrides, logs["cut"], 2)
    marker = cut / "checkpoints" / "checkpoint-2" / artifacts.COMPLETE
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert marker.exists(), logs["cut"].read_text()[-3000:]
    assert not (cut / artifacts.COMPLETE).exists(), "the run finished before it could be killed"
    assert not (cut / artifacts.ADAPTER_WEIGHTS).exists()

    _finish(_launch(overrides, logs["resume"], 2, resume=True), logs["resume"])
    resumed = _check_finished_folder(cut, lora_r=8)
    assert Path(resumed["resumed_from"]).name.startswith("checkpoint-")
    assert resumed["stop_reason"] == "early_stopping"
    assert (resumed["global_step"], resumed["best_step"]) == (metrics["global_step"], metrics["best_step"])
    assert [p["step"] for p in resumed["eval_loss_curve"]] == [p["step"] for p in curve]
    assert _same(_adapter(cut), saved, atol=1e-6)


def test_early_stopping_ignores_the_final_re_measure():
    """trainer.evaluate(metric_key_prefix="final_eval") after training neither counts towards patience
    nor logs transformers' "early stopping is disabled" warning; eval_loss evaluations still stop."""
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.testing_utils import CaptureLogger
    from transformers.utils import logging as hf_logging

    from nyxmed.training.callbacks import StopRecordingEarlyStopping

    args = TrainingArguments(output_dir="unused", metric_for_best_model="eval_loss", greater_is_better=False,
                             load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps", report_to=[])
    early, state, control = StopRecordingEarlyStopping(1, 0.0), TrainerState(), TrainerControl()
    early.on_train_begin(args, state, control)
    with CaptureLogger(hf_logging.get_logger("transformers.trainer_callback")) as captured:
        for loss in (1.0, 0.9):  # improving; the Trainer records the best after each evaluation
            early.on_evaluate(args, state, control, {"eval_loss": loss})
            state.best_metric = loss
        early.on_evaluate(args, state, control, {"final_eval_loss": 5.0})
    assert "early stopping is disabled" not in captured.out
    assert early.early_stopping_patience_counter == 0 and not control.should_training_stop
    early.on_evaluate(args, state, control, {"eval_loss": 1.2})  # worse than the best: patience 1 runs out
    assert control.should_training_stop and early.stopped


def test_trainer_args_reach_training_arguments_and_owned_fields_are_refused(tmp_path, monkeypatch):
    from nyxmed.config import ConfigError
    from nyxmed.training import run

    recipe = load_recipe(ROOT / "configs/tiny.yaml", ["train.trainer_args={logging_first_step: true}",
                                                      "train.report_to=[]"])
    args = run.training_arguments(recipe, tmp_path)
    assert args.logging_first_step is True and args.report_to == []
    assert run.training_arguments(load_recipe(ROOT / "configs/tiny.yaml"), tmp_path).report_to == ["tensorboard"]
    with pytest.raises(ConfigError, match=r"train.trainer_args.learning_rate: set by nyxmed"):
        run.training_arguments(load_recipe(ROOT / "configs/tiny.yaml", ["train.trainer_args={learning_rate: 0.1}"]),
                               tmp_path)
    real_find_spec = run.importlib.util.find_spec
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda m: None if m == "wandb" else real_find_spec(m))
    with pytest.raises(ConfigError, match=r"train.report_to: 'wandb' needs the wandb package"):
        run.training_arguments(load_recipe(ROOT / "configs/tiny.yaml", ["train.report_to=[wandb]"]), tmp_path)
