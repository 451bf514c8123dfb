"""The GRPO stage (``train.stage=grpo``): TRL's GRPOTrainer on the SFT result with code-line rewards.

Two starts (docs/training.md): continue the SFT adapter (``grpo.sft_adapter``, on the SFT base), or
a new LoRA adapter (the ``lora:`` section) on a merged SFT model (``model.base_model``). Prompts are
the built dataset's system/user columns as chat messages; rewards are :mod:`nyxmed.rewards`, one
TRL reward function per component, so every component gets its own curve. Checkpoints, resume,
frozen epochs, adapter verification and the COMPLETE marker are the SFT run's (:mod:`.run`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_from_disk
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from nyxmed import config as cfgmod
from nyxmed import rewards
from nyxmed.config import Recipe
from nyxmed.prompts import chat_messages
from nyxmed.training import artifacts
from nyxmed.training.callbacks import CheckpointCommitCallback, FrozenEpochCallback, RunStatsCallback
from nyxmed.training.run import (METRICS_FILE, TrainResult, _env, common_arguments, finish_run, run_provenance,
                                 start_run, with_passthrough)

PROMPT_COLUMNS = ("system", "user", "answer")
# grpo: fields that GRPOConfig takes under the same name (the vLLM ones only when vLLM is on)
_PASSED = ("num_generations", "max_completion_length", "temperature", "top_p", "beta", "loss_type", "epsilon",
           "num_iterations", "scale_rewards", "use_vllm")
_VLLM = ("vllm_mode", "vllm_server_base_url", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size")


def grpo_arguments(recipe: Recipe, checkpoint_dir: Path):
    """GRPOConfig (a TrainingArguments) for ``recipe``: the shared arguments plus the ``grpo:`` section."""
    from trl import GRPOConfig

    g = recipe.grpo
    if g.vllm_mode not in ("colocate", "server"):
        raise cfgmod.ConfigError(f"grpo.vllm_mode: expected colocate or server, got {g.vllm_mode!r}")
    t = recipe.train
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    completions = t.micro_batch_size * t.gradient_accumulation_steps * ranks  # TRL's generation batch
    if completions % g.num_generations:
        raise cfgmod.ConfigError(
            f"train.micro_batch_size x train.gradient_accumulation_steps x ranks = {t.micro_batch_size} x "
            f"{t.gradient_accumulation_steps} x {ranks} = {completions} completions per step: not a multiple of "
            f"grpo.num_generations ({g.num_generations}), the group of completions per prompt")
    names = _PASSED + (_VLLM if g.use_vllm else ())
    return GRPOConfig(**with_passthrough(recipe, dict(
        **common_arguments(recipe, checkpoint_dir),
        eval_strategy="no",  # no eval loss in RL; the benchmark (bench/grpo_gain.py) measures the stage
        reward_weights=list(rewards.component_weights(g.rewards).values()),
        **{name: getattr(g, name) for name in names},
    )))


def load_prompts(recipe: Recipe) -> Dataset:
    """The rollout prompts: ``grpo.split`` of the built dataset as chat messages, with the gold ``answer``."""
    dataset_dir = recipe.train.dataset_dir
    if not dataset_dir:
        raise cfgmod.ConfigError("train.dataset_dir: not set (a dataset folder from `nyxmed build-data`)")
    splits = load_from_disk(str(dataset_dir))
    if recipe.grpo.split not in splits:
        raise cfgmod.ConfigError(f"grpo.split: {recipe.grpo.split!r} not in {dataset_dir} (has {', '.join(splits)})")
    ds = splits[recipe.grpo.split]
    missing = [c for c in PROMPT_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(f"{dataset_dir}/{recipe.grpo.split}: columns {missing} missing (rebuild with `nyxmed build-data`)")
    if recipe.grpo.max_prompts is not None:
        ds = ds.select(range(min(recipe.grpo.max_prompts, len(ds))))
    for i, answer in enumerate(ds["answer"]):
        try:
            rewards.gold_line(answer)
        except ValueError as exc:
            raise ValueError(f"{dataset_dir}/{recipe.grpo.split} row {i} ({ds[i].get('id')}): field 'answer': {exc}") from exc
    ds = ds.map(lambda r: {"prompt": chat_messages(r["system"], r["user"])})
    return ds.select_columns(["prompt", "answer"])


def load_policy(recipe: Recipe, zero3: bool) -> tuple[torch.nn.Module, LoraConfig | None]:
    """The model to optimize and, for a new adapter, the LoRA config GRPOTrainer wraps it with.

    ``zero3``: keep adapter weights in the base dtype, since DeepSpeed ZeRO-3 fails on fp32 LoRA
    weights over a bf16 base (TRL does the same for the adapters it creates).
    """
    m, lora = recipe.model, recipe.lora
    dtype = getattr(torch, m.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise cfgmod.ConfigError(f"model.dtype: {m.dtype!r} is not a torch dtype")
    model = AutoModelForCausalLM.from_pretrained(m.base_model, dtype=dtype, attn_implementation=m.attn_implementation)
    model.config.use_cache = False
    if recipe.grpo.sft_adapter:
        if not (Path(recipe.grpo.sft_adapter) / artifacts.ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(f"grpo.sft_adapter: {recipe.grpo.sft_adapter} holds no {artifacts.ADAPTER_CONFIG}")
        model = PeftModel.from_pretrained(model, recipe.grpo.sft_adapter, is_trainable=True,
                                          autocast_adapter_dtype=not zero3)
        return model, None
    return model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")


def reward_curves(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Per-step mean of the total reward and of each component (TRL logs ``rewards/<name>/mean``)."""
    keys = {"reward": "reward", **{c: f"rewards/{c}/mean" for c in rewards.COMPONENTS}}
    return {name: [{"step": r["step"], "value": r[key]} for r in log_history if key in r] for name, key in keys.items()}


def train_grpo(recipe: Recipe, parent: Any | None = None) -> TrainResult:
    """Run the GRPO stage as ``recipe`` says; the artifacts in ``train.output_dir`` are the SFT run's."""
    from trl import GRPOTrainer

    t = recipe.train
    out = Path(t.output_dir)
    recipe, args, resume_from = start_run(recipe, parent, grpo_arguments)
    is_writer = args.should_save
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.tokenizer or recipe.model.base_model)
    prompts = load_prompts(recipe)
    set_seed(t.seed)
    zero3 = args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3
    model, peft_config = load_policy(recipe, zero3)
    provenance = run_provenance(recipe)
    stats = RunStatsCallback()
    with _env("TENSORBOARD_LOGGING_DIR", str(out / "logs")):
        trainer = GRPOTrainer(model=model, reward_funcs=rewards.reward_functions(recipe.grpo.rewards), args=args,
                              train_dataset=prompts, processing_class=tokenizer, peft_config=peft_config,
                              callbacks=[stats])
        expected = artifacts.expected_adapter_shapes(trainer.model)
        trainer.add_callback(CheckpointCommitCallback(trainer))
        trainer.add_callback(FrozenEpochCallback(trainer, out / "frozen", expected, evaluate=False,
                                                 provenance=provenance))
        trainer.train(resume_from_checkpoint=resume_from)

    state = trainer.state
    stop_reason = "max_steps" if args.max_steps > 0 and state.global_step >= args.max_steps else "epochs_completed"
    metrics: dict[str, Any] = {
        "stage": "grpo",
        "start": ({"sft_adapter": recipe.grpo.sft_adapter} if recipe.grpo.sft_adapter
                  else {"new_adapter_on": recipe.model.base_model}),
        "parent": parent.record() if parent else None,
        "stop_reason": stop_reason,
        "global_step": state.global_step,
        "epoch": state.epoch,
        "max_steps": state.max_steps,
        "reward_curves": reward_curves(state.log_history),
        # KL to the reference (the SFT policy), logged by TRL when grpo.beta > 0: how far the policy drifts
        "kl_curve": [{"step": r["step"], "value": r["kl"]} for r in state.log_history if "kl" in r],
        "reward_weights": rewards.component_weights(recipe.grpo.rewards),
        "train_loss_curve": [{"step": r["step"], "loss": r["loss"]} for r in state.log_history if "loss" in r],
        "train_seconds_this_session": stats.seconds,
        "seconds_per_step": stats.seconds / max(state.global_step - _step_of(resume_from), 1),
        "peak_memory_rank0": RunStatsCallback.peak_memory(),
        "world_size": args.world_size,
        "resumed_from": resume_from,
        "dataset": {"dir": str(t.dataset_dir), "split": recipe.grpo.split, "prompts": len(prompts),
                    "manifest_sha256": artifacts.file_sha256_or_none(Path(t.dataset_dir).parent / "manifest.json")},
        "git": artifacts.git_commit(),
        **provenance,
        "log_history": state.log_history,
    }
    frozen = finish_run(trainer, out, expected, metrics, is_writer)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(output_dir=out, global_step=state.global_step, best_step=None, best_eval_loss=None,
                       final_eval_loss=None, stop_reason=stop_reason, frozen=frozen,
                       metrics_path=out / METRICS_FILE)


def _step_of(checkpoint: str | None) -> int:
    m = artifacts.CHECKPOINT_RE.match(Path(checkpoint).name) if checkpoint else None
    return int(m.group(1)) if m else 0
