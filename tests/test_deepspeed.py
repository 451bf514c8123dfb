"""ZeRO-3 overrides from TrainConfig onto a DeepSpeed config."""

from __future__ import annotations

import pytest

from nyxmed.config import ConfigError, load_recipe
from nyxmed.training.deepspeed import apply_zero3_overrides

DS = {"bf16": {"enabled": "auto"}, "zero_optimization": {"stage": 3, "overlap_comm": False,
                                                         "stage3_prefetch_bucket_size": "auto"}}


def test_overrides_set_only_given_keys_and_copy():
    cfg = load_recipe(None, ["train.zero3_prefetch_bucket_size=500000000", "train.zero3_overlap_comm=true",
                             "train.zero3_max_live_parameters=2000000000",
                             "train.zero3_param_persistence_threshold=0"]).train
    out = apply_zero3_overrides(DS, cfg)
    zero = out["zero_optimization"]
    assert zero == {"stage": 3, "overlap_comm": True, "stage3_prefetch_bucket_size": 500000000,
                    "stage3_max_live_parameters": 2000000000, "stage3_param_persistence_threshold": 0}
    assert DS["zero_optimization"]["overlap_comm"] is False, "input must not be modified"
    assert apply_zero3_overrides(DS, load_recipe().train) == DS


def test_overrides_on_a_non_zero3_config_are_errors():
    cfg = load_recipe(None, ["train.zero3_overlap_comm=true"]).train
    with pytest.raises(ConfigError, match="train.zero3_overlap_comm.*stage=2"):
        apply_zero3_overrides({"zero_optimization": {"stage": 2}}, cfg)
    bad = load_recipe(None, ["train.zero3_max_live_parameters=-1"]).train
    with pytest.raises(ConfigError, match="zero3_max_live_parameters.*-1"):
        apply_zero3_overrides(DS, bad)


def test_deepspeed_accepts_the_result():
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    cfg = load_recipe(None, ["train.zero3_prefetch_bucket_size=500000000", "train.zero3_overlap_comm=true",
                             "train.zero3_max_reuse_distance=1000000000", "train.zero3_reduce_bucket_size=50000000"]).train
    zero = DeepSpeedZeroConfig(**apply_zero3_overrides({"zero_optimization": {"stage": 3}}, cfg)["zero_optimization"])
    assert (zero.prefetch_bucket_size, zero.overlap_comm, zero.max_reuse_distance, zero.reduce_bucket_size) == (
        500000000, True, 1000000000, 50000000)


def test_deepspeed_config_reads_the_json_only_when_overridden(tmp_path):
    import json

    from nyxmed.training.deepspeed import deepspeed_config

    path = tmp_path / "zero3.json"
    path.write_text(json.dumps(DS))
    assert deepspeed_config(str(path), load_recipe().train) == str(path)
    assert deepspeed_config(None, load_recipe().train) is None
    cfg = load_recipe(None, ["train.zero3_param_persistence_threshold=2000000"]).train
    out = deepspeed_config(str(path), cfg)
    assert out["zero_optimization"]["stage3_param_persistence_threshold"] == 2000000
    assert out["bf16"] == DS["bf16"]
