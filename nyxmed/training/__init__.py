"""LoRA fine-tuning with the transformers Trainer: loss, packing, batching, DeepSpeed, kernels, artifacts.

``train(recipe) -> TrainResult`` is the library entry; ``nyxmed train`` and ``train.py`` only parse.
The entry is imported lazily so that the light modules (``batching``, ``loss``) load without the
Trainer's run machinery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nyxmed.training import run

        return getattr(run, name)
    raise AttributeError(f"module 'nyxmed.training' has no attribute {name!r}")
