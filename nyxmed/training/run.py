"""``train(recipe)``: build the Trainer from a recipe, run it, and write the artifacts.

Every rank of a distributed launch (``deepspeed`` / ``accelerate launch``) runs this function;
the collective saves run everywhere and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, set_seed

from nyxmed import config as cfgmod
from nyxmed.codes import icd10cm
from nyxmed.config import Recipe
from nyxmed.provenance import base_fingerprint, local_model_dir
from nyxmed.errors import NotFound, OutputConflict
from nyxmed.training.kernels import apply_liger
from nyxmed.training.packing import PackingCollator, check_packing_supported
from nyxmed.io import read_json, sha256_file, write_json
from nyxmed.training import artifacts
from nyxmed.training.batching import PaddedCollator, load_training_splits
from nyxmed.training.callbacks import (CheckpointCommitCallback, FrozenEpochCallback, RunStatsCallback,
                                       StopRecordingEarlyStopping)
from nyxmed.training.loss import WeightedLossTrainer
from nyxmed.training.deepspeed import deepspeed_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
METRICS_FILE = "training_metrics.json"
LOSS_PLOT = "loss_curves.png"
# Files of a finished run at the top of output_dir; removed when a new run (or a resume) starts,
# so a cut-off run never leaves an earlier run's adapter looking like its own.
FINAL_FILES = (artifacts.COMPLETE, artifacts.ADAPTER_WEIGHTS, artifacts.ADAPTER_CONFIG, METRICS_FILE, LOSS_PLOT,
               "deepspeed_config.json")


@dataclass(frozen=True)
class TrainResult:
    """Where the run's artifacts are and how it ended."""

    output_dir: Path
    global_step: int
    best_step: int | None
    best_eval_loss: float | None
    final_eval_loss: float | None
    stop_reason: str  # early_stopping | max_steps | epochs_completed
    frozen: tuple[Path, ...]
    metrics_path: Path


def resolve_deepspeed(path: str | None) -> str | None:
    """The DeepSpeed JSON as an absolute path: relative to the working dir, else to the project root."""
    if not path:
        return None
    p = Path(path)
    for candidate in (p, PROJECT_ROOT / p) if not p.is_absolute() else (p,):
        if candidate.is_file():
            return str(candidate.resolve())
    raise NotFound(f"train.deepspeed: {path} not found (looked in {Path.cwd()} and {PROJECT_ROOT})")


def common_arguments(recipe: Recipe, checkpoint_dir: Path) -> dict[str, Any]:
    """TrainingArguments keywords every stage shares (schedule, precision, DeepSpeed, saving, logging)."""
    t = recipe.train
    if not 0 <= t.warmup_ratio < 1:
        raise cfgmod.ConfigError(f"train.warmup_ratio: expected a fraction in [0, 1), got {t.warmup_ratio}")
    deepspeed = deepspeed_config(resolve_deepspeed(t.deepspeed), t)  # train.zero3_* written over the JSON
    accelerator_config = None
    if deepspeed and not torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        accelerator_config = _cpu_deepspeed_state()
    return dict(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a fraction of all steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=t.bf16,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # LoRA: frozen inputs need non-reentrant
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        seed=t.seed,
        data_seed=t.seed,
        deepspeed=deepspeed,
        accelerator_config=accelerator_config,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=list(t.report_to) or "none",
        remove_unused_columns=False,  # SFT keeps `weight` (token_weights), GRPO the gold `answer`
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        dataloader_num_workers=t.dataloader_num_workers,
    )


def with_passthrough(recipe: Recipe, owned: dict[str, Any]) -> dict[str, Any]:
    """``owned`` (the arguments nyxmed sets) plus ``train.trainer_args``; a passed-through name that
    nyxmed sets, or a ``train.report_to`` integration that is not installed, is a ConfigError."""
    t = recipe.train
    clash = sorted(set(t.trainer_args) & set(owned))
    if clash:
        raise cfgmod.ConfigError(f"train.trainer_args.{clash[0]}: set by nyxmed itself (from the train section; "
                                 f"see docs/training.md), so it cannot be passed through")
    check_report_to(t.report_to)
    return {**owned, **t.trainer_args}


def run_provenance(recipe: Recipe) -> dict[str, Any]:
    """What an adapter records of its inputs; ``nyxmed merge`` checks the base fingerprint, so the
    adapter goes into exactly the base it was trained on."""
    return {"base_model_fingerprint": base_fingerprint(local_model_dir(recipe.model.base_model)),
            "icd10cm_release": icd10cm.release_name()}


def check_report_to(report_to: list[str]) -> None:
    """Raise :class:`ConfigError` naming ``train.report_to`` when an integration's package is missing."""
    for name in report_to:
        if not any(importlib.util.find_spec(m) for m in cfgmod.REPORT_TO_PACKAGES[name]):
            raise cfgmod.ConfigError(f"train.report_to: {name!r} needs the {cfgmod.REPORT_TO_PACKAGES[name][0]} "
                                     f"package, which is not installed (pip install "
                                     f"{cfgmod.REPORT_TO_PACKAGES[name][0]}, or drop it from train.report_to)")


def training_arguments(recipe: Recipe, checkpoint_dir: Path) -> TrainingArguments:
    """TrainingArguments for ``recipe``. Build them before loading the model: under ZeRO-3 they make
    ``from_pretrained`` partition the weights as it loads (a 70B model never sits whole on one rank)."""
    return TrainingArguments(**with_passthrough(recipe, dict(
        **common_arguments(recipe, checkpoint_dir),
        per_device_eval_batch_size=recipe.train.eval_batch_size,
        eval_strategy="steps",
        eval_steps=recipe.train.eval_steps,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        prediction_loss_only=True,
        include_num_input_tokens_seen="non_padding",
    )))


def _cpu_deepspeed_state() -> dict[str, Any]:
    """Start a DeepSpeed process group on gloo for a launch on a machine without GPUs.

    TrainingArguments passes no backend to accelerate for DeepSpeed, and without CUDA accelerate
    then takes the run for a single process (world size 1) although DeepSpeed joined all ranks.
    Configuring the state here with gloo and handing it over makes every rank see the real world.
    """
    from accelerate import PartialState

    with _env("ACCELERATE_USE_DEEPSPEED", "true"):
        PartialState(backend="gloo")
    return {"use_configured_state": True}


def load_lora_model(recipe: Recipe) -> torch.nn.Module:
    """The base model with a fresh LoRA adapter (only the adapter is trainable)."""
    m, lora = recipe.model, recipe.lora
    dtype = getattr(torch, m.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise cfgmod.ConfigError(f"model.dtype: {m.dtype!r} is not a torch dtype")
    model = AutoModelForCausalLM.from_pretrained(m.base_model, dtype=dtype, attn_implementation=m.attn_implementation)
    model.config.use_cache = False  # no KV cache while training (and gradient checkpointing refuses one)
    return get_peft_model(model, lora.to_peft())


def make_collator(t: cfgmod.TrainConfig, pad_token_id: int) -> PackingCollator | PaddedCollator:
    """The batch collator ``train`` selects: packed rows with ``train.packing``, else padded ones."""
    return (PackingCollator(pad_token_id, max_tokens=t.packing_max_tokens) if t.packing
            else PaddedCollator(pad_token_id))


def resume_point(recipe: Recipe, checkpoint_dir: Path, is_writer: bool) -> str | None:
    """The checkpoint to resume from (newest complete one), or None for a fresh run.

    Raises ``FileNotFoundError`` when resume is asked for and there is nothing to resume, and
    ``FileExistsError`` when a fresh run would mix with an earlier run's checkpoints.
    """
    complete = artifacts.complete_checkpoints(checkpoint_dir)
    if not recipe.train.resume:
        if checkpoint_dir.is_dir() and any(artifacts.CHECKPOINT_RE.match(p.name) for p in checkpoint_dir.iterdir()):
            raise OutputConflict(f"{checkpoint_dir} holds checkpoints of an earlier run: pass --resume "
                                  f"(train.resume=true) to continue it, or set a new train.output_dir")
        return None
    if not complete:
        raise NotFound(f"train.resume=true but {checkpoint_dir} holds no complete checkpoint")
    if is_writer:  # checkpoints cut off mid-save are newer than the resume point; the run rewrites them
        artifacts.remove_incomplete_checkpoints(checkpoint_dir)
    return str(complete[-1])


def start_run(recipe: Recipe, parent: Any | None, arguments) -> tuple[Recipe, Any, str | None]:
    """Begin a run of either stage: the recipe it loads (:func:`loaded_recipe`), its arguments
    (``arguments(recipe, checkpoint_dir)``: TrainingArguments or GRPOConfig) and the resume point.
    On the writer, clear an earlier run's final files and save ``recipe`` as given (``release:...``
    kept as written) to config.yaml."""
    out = Path(recipe.train.output_dir)
    checkpoint_dir = out / "checkpoints"
    loaded = loaded_recipe(recipe, parent)
    args = arguments(loaded, checkpoint_dir)
    is_writer = args.should_save
    resume_from = resume_point(recipe, checkpoint_dir, is_writer)
    if is_writer:
        out.mkdir(parents=True, exist_ok=True)
        for name in FINAL_FILES:
            (out / name).unlink(missing_ok=True)
        cfgmod.save(recipe, out / "config.yaml")
    return loaded, args, resume_from


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def finish_run(trainer, out: Path, expected: dict[str, tuple[int, ...]], metrics: dict[str, Any],
               is_writer: bool) -> tuple[Path, ...]:
    """Save and verify the adapter into ``out``, write the metrics and loss plot, then the COMPLETE marker.

    Collective (every rank saves its ZeRO-3 part); returns the frozen epoch adapters, oldest first.
    """
    state = trainer.state
    tmp = out / ".adapter.tmp"
    summary = artifacts.save_verified(lambda d: trainer.save_model(str(d)), tmp, expected, is_writer)
    frozen = tuple(sorted((out / "frozen").glob("epoch-*"), key=lambda p: int(p.name.split("-")[1])))
    if is_writer:
        metrics["adapter"] = summary
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
        tmp.rmdir()
        if trainer.is_deepspeed_enabled:
            write_json(out / "deepspeed_config.json", trainer.accelerator.deepspeed_plugin.deepspeed_config)
        write_json(out / METRICS_FILE, metrics)
        artifacts.plot_loss_curves(state.log_history, out / LOSS_PLOT)
        # The commit point: written last, it lists every file of the finished adapter folder.
        finished = {p.name: sha256_file(p) for p in sorted(out.iterdir())
                    if p.is_file() and p.name != artifacts.COMPLETE}
        write_json(out / artifacts.COMPLETE, {"step": state.global_step, "sha256": finished})
    return frozen


def loaded_recipe(recipe: Recipe, parent: Any | None) -> Recipe:
    """The recipe a run loads: with a parent release (``model.base_model: release:...``, resolved by the
    launcher with :func:`nyxmed.releases.parent.resolve_parent`), ``model.base_model`` and an unset
    ``model.tokenizer`` point at the parent's merged model; ``recipe`` itself is what config.yaml keeps."""
    m = recipe.model
    if parent is None:
        if cfgmod.is_release_spec(m.base_model):
            raise cfgmod.ConfigError(f"model.base_model: {m.base_model!r} names a release: resolve it first "
                                     "(nyxmed.releases.parent.resolve_parent; train.py does)")
        return recipe
    return replace(recipe, model=replace(m, base_model=str(parent.model_dir),
                                         tokenizer=m.tokenizer or str(parent.model_dir)))


def train(recipe: Recipe, parent: Any | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter as ``recipe`` says; write the artifacts into ``train.output_dir``.

    ``parent``: the resolved release ``model.base_model`` names (:class:`nyxmed.releases.parent.ParentRelease`),
    whose merged model is trained on and whose record lands in training_metrics.json.
    Raises ``ValueError``/``FileNotFoundError`` for a bad dataset, config or resume state and
    :class:`artifacts.AdapterError` if the saved adapter is not the full trained adapter.
    """
    t = recipe.train
    if t.stage == "grpo":
        from nyxmed.training.grpo import train_grpo

        return train_grpo(recipe, parent)
    if t.stage != "sft":
        raise cfgmod.ConfigError(f"train.stage: expected sft or grpo, got {t.stage!r}")
    if not t.dataset_dir:
        raise cfgmod.ConfigError("train.dataset_dir: not set (a dataset folder from `nyxmed build-data`)")
    out = Path(t.output_dir)
    recipe, args, resume_from = start_run(recipe, parent, training_arguments)
    is_writer = args.should_save

    tokenizer = AutoTokenizer.from_pretrained(recipe.model.tokenizer or recipe.model.base_model)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"model.tokenizer: {recipe.model.tokenizer or recipe.model.base_model} has no pad token")
    train_ds, val_ds = load_training_splits(t.dataset_dir, recipe.prompt.max_length)
    set_seed(t.seed)  # the LoRA A matrices are drawn here, before the Trainer seeds: same seed, same run
    model = load_lora_model(recipe)
    apply_liger(model, t)
    if t.packing:
        check_packing_supported(model)
    collator = make_collator(t, tokenizer.pad_token_id)
    expected = artifacts.expected_adapter_shapes(model)
    provenance = run_provenance(recipe)

    early = StopRecordingEarlyStopping(t.early_stopping_patience, t.early_stopping_threshold)
    stats = RunStatsCallback()
    with _env("TENSORBOARD_LOGGING_DIR", str(out / "logs")):
        trainer = WeightedLossTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                                      data_collator=collator,
                                      processing_class=tokenizer, callbacks=[early, stats])
        trainer.add_callback(CheckpointCommitCallback(trainer))
        trainer.add_callback(FrozenEpochCallback(trainer, out / "frozen", expected, provenance=provenance))
        tokens_before = 0
        if resume_from:
            tokens_before = read_json(Path(resume_from) / "trainer_state.json").get("num_input_tokens_seen", 0)
        trainer.train(resume_from_checkpoint=resume_from)
        # After load-best this re-measures the model that is saved: it must equal the best metric.
        final_eval = trainer.evaluate(metric_key_prefix="final_eval")

    state = trainer.state
    # On resume the Trainer replaces stateful callbacks with copies restored from the checkpoint.
    early = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StopRecordingEarlyStopping))
    if early.stopped:
        stop_reason = "early_stopping"
    elif args.max_steps > 0 and state.global_step >= args.max_steps:
        stop_reason = "max_steps"
    else:
        stop_reason = "epochs_completed"
    tokens_session = state.num_input_tokens_seen - tokens_before
    metrics: dict[str, Any] = {
        "stop_reason": stop_reason,
        "global_step": state.global_step,
        "epoch": state.epoch,
        "max_steps": state.max_steps,
        "best_step": state.best_global_step,
        "best_eval_loss": state.best_metric,
        "best_checkpoint": state.best_model_checkpoint,
        "final_eval_loss": final_eval.get("final_eval_loss"),
        "eval_loss_curve": [{"step": r["step"], "eval_loss": r["eval_loss"]} for r in state.log_history
                            if "eval_loss" in r],
        "train_loss_curve": [{"step": r["step"], "loss": r["loss"]} for r in state.log_history if "loss" in r],
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_seen_this_session": tokens_session,
        "train_seconds_this_session": stats.seconds,
        "tokens_per_second": tokens_session / stats.seconds if stats.seconds else None,
        "peak_memory_rank0": RunStatsCallback.peak_memory(),
        "world_size": args.world_size,
        "effective_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * args.world_size,
        "resumed_from": resume_from,
        "early_stopping": {"patience": t.early_stopping_patience, "threshold": t.early_stopping_threshold,
                           "counter": early.early_stopping_patience_counter},
        "dataset": {"dir": str(t.dataset_dir), "train_rows": len(train_ds), "validation_rows": len(val_ds),
                    "manifest_sha256": artifacts.file_sha256_or_none(Path(t.dataset_dir).parent / "manifest.json")},
        **provenance,
        "parent": parent.record() if parent else None,
        "git": artifacts.git_commit(),
        "log_history": state.log_history,
    }

    frozen = finish_run(trainer, out, expected, metrics, is_writer)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output_dir=out, global_step=state.global_step, best_step=state.best_global_step,
                       best_eval_loss=state.best_metric, final_eval_loss=final_eval.get("final_eval_loss"),
                       stop_reason=stop_reason, frozen=frozen, metrics_path=out / METRICS_FILE)

