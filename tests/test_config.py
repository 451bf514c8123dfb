"""The one config system: YAML + dotted overrides, typed checks naming the key, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from nyxmed import config
from nyxmed.config import ConfigError, DataConfig, Recipe, TrainConfig, load, load_recipe, save
from nyxmed.io import write_atomic


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file():
    recipe = load_recipe()
    assert recipe == Recipe()
    assert isinstance(recipe.train, TrainConfig) and recipe.train.learning_rate == TrainConfig().learning_rate


def test_yaml_load_sets_values_and_keeps_other_defaults(tmp_path):
    path = _yaml(tmp_path, """
name: v18
data:
  synth_n: 120
  sources: [a.jsonl, b.csv]
train:
  learning_rate: 2e-5     # YAML 1.1 reads this as text; the float field still takes it
  epochs: 3
  deepspeed: null
lora:
  r: 8
""")
    recipe = load_recipe(path)
    assert recipe.name == "v18"
    assert recipe.data.synth_n == 120 and recipe.data.sources == ["a.jsonl", "b.csv"]
    assert recipe.train.learning_rate == pytest.approx(2e-5) and isinstance(recipe.train.learning_rate, float)
    assert recipe.train.epochs == 3.0 and isinstance(recipe.train.epochs, float)
    assert recipe.train.deepspeed is None
    assert recipe.lora.r == 8 and recipe.lora.alpha == config.LoraSettings().alpha
    assert recipe.data.synth_seed == DataConfig().synth_seed


def test_empty_section_header_means_defaults(tmp_path):
    recipe = load_recipe(_yaml(tmp_path, "train:\ndata:\n"), ["train.seed=3"])
    assert recipe.data == DataConfig() and recipe.train.seed == 3


def test_dotted_overrides_win_over_the_file(tmp_path):
    path = _yaml(tmp_path, "train:\n  learning_rate: 1.0e-4\n  bf16: true\n")
    recipe = load_recipe(path, ["train.learning_rate=3e-5", "--train.bf16=false", "data.sources=x.jsonl,y.csv",
                                "lora.target_modules=[q_proj, v_proj]", "model.tokenizer=null", "name=v19"])
    assert recipe.train.learning_rate == pytest.approx(3e-5)
    assert recipe.train.bf16 is False
    assert recipe.data.sources == ["x.jsonl", "y.csv"]
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.model.tokenizer is None and recipe.name == "v19"


def test_overrides_on_a_single_section_class():
    cfg = load(TrainConfig, None, ["max_steps=5", "output_dir=out/x"])
    assert cfg.max_steps == 5 and cfg.output_dir == "out/x"


@pytest.mark.parametrize(
    ("override", "message"),
    [("train.epochs=abc", "train.epochs: expected a number, got 'abc'"),
     ("train.micro_batch_size=1.5", "train.micro_batch_size: expected an integer, got 1.5"),
     ("train.bf16=1", "train.bf16: expected true/false, got 1"),
     ("train.gradient_checkpointing=maybe", "train.gradient_checkpointing: expected true/false, got 'maybe'"),
     ("model.dtype=yes", "model.dtype: expected text, got True"),
     ("lora.target_modules={a: 1}", "lora.target_modules: expected a list"),
     ("train=5", "train: expected a map for section TrainConfig"),
     ("data.synth_n=[1]", "data.synth_n: expected an integer")],
)
def test_type_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(None, [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.learning_rat=1e-5", "train.learning_rat"), ("trian.epochs=1", "trian"), ("nme=v1", "nme")],
)
def test_unknown_override_keys_are_named(override, key):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        load_recipe(None, [override])


def test_unknown_yaml_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lora.rank' \(known: .*\br\b"):
        load_recipe(_yaml(tmp_path, "lora:\n  rank: 8\n"))


@pytest.mark.parametrize("bad", ["no-equals", "=5", "train.epochs"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="not key=value"):
        load_recipe(None, [bad])


def test_override_into_a_value_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'epochs' is not a section"):
        load_recipe(_yaml(tmp_path, "train:\n  epochs: 2\n"), ["train.epochs.x=1"])


def test_top_level_must_be_a_map(tmp_path):
    with pytest.raises(ConfigError, match="expected a YAML map"):
        load_recipe(_yaml(tmp_path, "- a\n- b\n"))


def test_save_load_round_trip(tmp_path):
    recipe = load_recipe(None, ["name=rt", "train.learning_rate=2e-5", "data.sources=[a.jsonl]",
                                "retrieval.embedding_model=/models/minilm", "lora.r=16", "train.deepspeed=null"])
    path = save(recipe, tmp_path / "out" / "config.yaml")
    assert path.is_file()
    assert load_recipe(path) == recipe
    # the file is plain YAML with one map per section
    assert set(yaml.safe_load(path.read_text())) == {f for f in Recipe.__dataclass_fields__}


def test_write_atomic_writes_text_and_bytes(tmp_path):
    target = tmp_path / "deep" / "er" / "a.json"
    assert write_atomic(target, "héllo") == target
    assert target.read_text(encoding="utf-8") == "héllo"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]  # no temp files left


def test_write_atomic_gives_the_umask_mode_not_0600(tmp_path):
    target = write_atomic(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_atomic_failure_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(config.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "x" * 100_000)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


def test_write_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_atomic(target, "old")
    monkeypatch.setattr(config.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_atomic_bad_data_type_cleans_up(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "a.txt", 123)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_override_value_that_is_not_yaml_stays_text():
    recipe = load_recipe(None, ["model.base_model=/models/llama: [70b", "data.cpt_table=licensed/cpt.csv"])
    assert recipe.model.base_model == "/models/llama: [70b"
    assert recipe.data.cpt_table == "licensed/cpt.csv"


def test_malformed_yaml_file_names_the_file(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_recipe(path)


def test_lora_to_peft_is_the_config_training_built():
    from peft import LoraConfig

    lora = config.LoraSettings(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    built = lora.to_peft()
    before = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], bias="none",
                        task_type="CAUSAL_LM")
    assert built.to_dict() == before.to_dict()
    assert lora.to_peft(init_lora_weights=False).init_lora_weights is False


def test_report_to_names_are_checked_at_load():
    assert TrainConfig().report_to == ["tensorboard"]
    assert load_recipe(None, ["train.report_to=[wandb, mlflow]"]).train.report_to == ["wandb", "mlflow"]
    with pytest.raises(ConfigError, match=r"train.report_to: 'neptune' is not one of tensorboard, wandb, mlflow"):
        load_recipe(None, ["train.report_to=[neptune]"])


@pytest.mark.parametrize("value, message", [
    ("{nope: 1}", r"train.trainer_args.nope: not a transformers TrainingArguments field"),
    ("{logging_first_step: maybe}", r"train.trainer_args.logging_first_step: bad value 'maybe'"),
    ("{save_strategy: weekly}", r"train.trainer_args.save_strategy: 'weekly' is not one of no, steps"),
    ("{dataloader_prefetch_factor: x}", r"train.trainer_args.dataloader_prefetch_factor: bad value 'x'"),
    ("{hub_strategy: nightly}", r"train.trainer_args.hub_strategy: 'nightly' is not one of end, every_save"),
    ("3", r"train.trainer_args: expected a map"),
])
def test_trainer_args_are_checked_as_training_arguments(value, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe(None, [f"train.trainer_args={value}"])


def test_trainer_args_pass_valid_fields_through():
    train = load_recipe(None, ["train.trainer_args={logging_first_step: true, lr_scheduler_kwargs: {min_lr: 0.0}}"]).train
    assert train.trainer_args == {"logging_first_step": True, "lr_scheduler_kwargs": {"min_lr": 0.0}}
