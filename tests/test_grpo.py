"""GRPO stage: prompts and arguments from the recipe, and real runs (one process; ZeRO-3 on 2 CPU ranks, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from nyxmed import rewards
from nyxmed.config import load_recipe
from nyxmed.training import artifacts
from nyxmed.training.grpo import grpo_arguments, load_prompts
from test_training import DEEPSPEED, ROOT, _adapter, _base_and_adapter, _finish, _launch, _same
from training_data import SYSTEM, build_dataset

GRPO = ["train.stage=grpo", "grpo.num_generations=2", "grpo.max_completion_length=8", "train.save_steps=2",
        "train.logging_steps=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return build_dataset(tiny_tokenizer, tmp_path_factory.mktemp("grpo_data"), n_train=8)


def _overrides(base_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.base_model={base_dir}", f"train.dataset_dir={data}", f"train.output_dir={out}", *GRPO, *extra]


def test_shipped_grpo_recipe_loads():
    recipe = load_recipe(ROOT / "configs/grpo.yaml")
    assert recipe.train.stage == "grpo" and recipe.grpo.num_generations == 8 and recipe.grpo.sft_adapter


def test_prompts_are_the_dataset_chats_and_weights_follow_the_components(data_dir, tmp_path):
    recipe = load_recipe(ROOT / "configs/tiny.yaml", _overrides(Path("unused"), data_dir, tmp_path,
                                                               "grpo.max_prompts=3", "grpo.rewards.icd=5"))
    prompts = load_prompts(recipe)
    train = load_from_disk(str(data_dir))["train"]
    assert len(prompts) == 3 and prompts.column_names == ["prompt", "answer"]
    assert prompts[1]["prompt"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": train[1]["user"]}]
    assert prompts["answer"] == train["answer"][:3]
    args = grpo_arguments(recipe, tmp_path / "checkpoints")
    assert (args.num_generations, args.max_completion_length, args.loss_type) == (2, 8, "dapo")
    assert args.reward_weights[rewards.COMPONENTS.index("icd")] == 5
    # a step's completions must be whole groups: named as a config error before TRL is asked
    from nyxmed.config import ConfigError

    odd = load_recipe(ROOT / "configs/tiny.yaml", _overrides(Path("unused"), data_dir, tmp_path,
                                                            "grpo.num_generations=3"))
    with pytest.raises(ConfigError, match=r"not a multiple of grpo.num_generations \(3\)"):
        grpo_arguments(odd, tmp_path / "checkpoints")


@pytest.mark.slow
def test_single_process_new_adapter(tiny_base_dir, data_dir, tmp_path):
    """A new LoRA adapter (the ``lora:`` section) on a model standing in for the merged SFT model, with a
    KL term (beta > 0: the reference is the model with the adapter disabled)."""
    out = tmp_path / "grpo"
    log = tmp_path / "run.log"
    _finish(_launch(_overrides(tiny_base_dir, data_dir, out, "train.max_steps=2", "grpo.beta=0.04"), log,
                    ranks=1), log)
    metrics = json.loads((out / "training_metrics.json").read_text())
    assert metrics["start"] == {"new_adapter_on": str(tiny_base_dir)} and metrics["global_step"] == 2
    kl = metrics["kl_curve"]
    assert [r["step"] for r in kl] == [1, 2] and all(r["value"] >= 0 for r in kl)
    assert json.loads((out / artifacts.ADAPTER_CONFIG).read_text())["r"] == 8
    assert all(p.name.startswith("checkpoint-") and (p / artifacts.COMPLETE).is_file()
               for p in (out / "checkpoints").iterdir() if p.is_dir())


@pytest.mark.slow
def test_deepspeed_zero3_continues_sft_adapter_and_resumes(tiny_base_dir, tiny_adapter_dir, data_dir, tmp_path):
    """2 CPU ranks (gloo) under ZeRO-3: rewards per component logged, adapter verified and loadable, resume."""
    assert DEEPSPEED.is_file(), "deepspeed launcher not installed in this environment"
    out = tmp_path / "grpo"
    common = _overrides(tiny_base_dir, data_dir, out, "train.deepspeed=ds_configs/zero3.json",
                        f"grpo.sft_adapter={tiny_adapter_dir}")
    log = tmp_path / "first.log"
    _finish(_launch([*common, "train.max_steps=2"], log, ranks=2), log)
    first = json.loads((out / "training_metrics.json").read_text())
    assert first["world_size"] == 2 and first["global_step"] == 2
    assert json.loads((out / "deepspeed_config.json").read_text())["zero_optimization"]["stage"] == 3
    curves = first["reward_curves"]
    assert set(curves) == {"reward", *rewards.COMPONENTS}
    assert all([r["step"] for r in curves[c]] == [1, 2] for c in curves)
    # every completion of a random tiny model is unparseable: the component says so on every step
    assert all(r["value"] == -1 for r in curves["unparseable"])
    complete = json.loads((out / artifacts.COMPLETE).read_text())
    assert "adapter_model.safetensors" in complete["sha256"] and first["adapter"]["tensors"] > 0
    # All rewards are equal, so every advantage and update is zero: the saved adapter must be the SFT
    # adapter, loaded into the ZeRO-3 shards and gathered back whole.
    assert _same(_adapter(out), _adapter(tiny_adapter_dir), atol=1e-6)
    model = _base_and_adapter(tiny_base_dir, out)  # loadable on the base
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size

    log = tmp_path / "resume.log"
    _finish(_launch([*common, "train.max_steps=4"], log, ranks=2, resume=True), log)
    resumed = json.loads((out / "training_metrics.json").read_text())
    assert Path(resumed["resumed_from"]).name == "checkpoint-2" and resumed["global_step"] == 4
    assert [r["step"] for r in resumed["reward_curves"]["reward"]] == [1, 2, 3, 4]
    assert _same(_adapter(out), _adapter(tiny_adapter_dir), atol=1e-6)
