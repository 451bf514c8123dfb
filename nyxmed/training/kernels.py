"""Optional fused GPU kernels (Liger Kernel), switched by ``train.use_liger``; off by default.

Liger swaps Llama's RMSNorm, SwiGLU MLP and RoPE for Triton kernels that give the same results
with less memory traffic. Its fused linear cross-entropy is left off: it replaces the forward
so that no logits come back, and nyxmed's per-token weighted loss
(:func:`nyxmed.training.loss.weighted_lm_loss`) needs the logits.
"""

from __future__ import annotations

import importlib
from typing import Any

from nyxmed.config import TrainConfig
from nyxmed.errors import UsageError

LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
                 "fused_linear_cross_entropy": False}


class KernelsUnavailable(UsageError, RuntimeError):
    """``train.use_liger`` is on but Liger Kernel (or a CUDA GPU) is not there."""


def apply_liger(model: Any, train_cfg: TrainConfig) -> bool:
    """Patch ``model`` (a Llama, optionally PEFT-wrapped) with Liger kernels if ``use_liger``.

    Returns whether kernels were applied; raises :class:`KernelsUnavailable` when switched on
    without the package or without a CUDA device.
    """
    if not train_cfg.use_liger:
        return False
    try:
        liger = importlib.import_module("liger_kernel.transformers")
    except ImportError as exc:
        raise KernelsUnavailable(
            "train.use_liger=true but liger-kernel is not installed: pip install 'nyxmed[kernels]' "
            "(needs a CUDA GPU and Triton), or set train.use_liger=false") from exc
    import torch

    if not torch.cuda.is_available():
        raise KernelsUnavailable("train.use_liger=true but no CUDA device is visible: Liger kernels are Triton GPU kernels")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type != "llama":
        raise KernelsUnavailable(f"train.use_liger=true: model_type {model_type!r} is not supported here (llama only)")
    liger.apply_liger_kernel_to_llama(model=base, **LIGER_KERNELS)
    return True
