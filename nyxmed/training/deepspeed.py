"""ZeRO-3 knobs from :class:`~nyxmed.config.TrainConfig` written over a DeepSpeed JSON config.

With LoRA the 70B base is frozen: under ZeRO-3 it is held as 16-bit shards with no gradients
and no optimizer state, so the knobs that matter are the ones that hide its all-gathers
(prefetch bucket, live parameters, reuse distance, overlap) - see docs/performance.md.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from nyxmed.config import ConfigError, TrainConfig

# TrainConfig field -> key under "zero_optimization".
ZERO3_KEYS = {
    "zero3_prefetch_bucket_size": "stage3_prefetch_bucket_size",
    "zero3_max_live_parameters": "stage3_max_live_parameters",
    "zero3_max_reuse_distance": "stage3_max_reuse_distance",
    "zero3_param_persistence_threshold": "stage3_param_persistence_threshold",
    "zero3_overlap_comm": "overlap_comm",
    "zero3_reduce_bucket_size": "reduce_bucket_size",
}


def apply_zero3_overrides(ds_config: dict[str, Any], train_cfg: TrainConfig) -> dict[str, Any]:
    """Return a copy of ``ds_config`` with every non-null ``train.zero3_*`` value set.

    Raises :class:`ConfigError` naming the field when a value is set but the config is not
    ZeRO stage 3, or when a size is negative.
    """
    out = copy.deepcopy(ds_config)
    overrides = {key: getattr(train_cfg, field) for field, key in ZERO3_KEYS.items()
                 if getattr(train_cfg, field) is not None}
    if not overrides:
        return out
    zero = out.setdefault("zero_optimization", {})
    stage = zero.get("stage")
    if stage != 3:
        field = next(f for f, k in ZERO3_KEYS.items() if k in overrides)
        raise ConfigError(f"train.{field}: set, but the DeepSpeed config has zero_optimization.stage={stage!r}, not 3")
    for field, key in ZERO3_KEYS.items():
        value = overrides.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"train.{field}: expected a non-negative integer, got {value!r}")
    zero.update(overrides)
    return out


def deepspeed_config(path: str | None, train_cfg: TrainConfig) -> str | dict[str, Any] | None:
    """What ``TrainingArguments(deepspeed=...)`` gets: ``path`` as is, or its JSON with the overrides."""
    if not path or all(getattr(train_cfg, f) is None for f in ZERO3_KEYS):
        return path
    with open(path, encoding="utf-8") as fh:
        return apply_zero3_overrides(json.load(fh), train_cfg)
