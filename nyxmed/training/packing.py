"""Padding-free packing: several examples per row, each attending only to itself.

A packed row concatenates examples; ``position_ids`` restart at 0 for each one and there is no
``attention_mask``, so transformers builds a block-diagonal causal mask from the position ids
(sdpa/eager/flex on CPU or GPU; flash-attention varlen on GPU). The model must run with
``use_cache=False``: with a cache, transformers skips packed-sequence detection and examples
attend to their neighbours. Per-token loss weights travel as ``token_weights`` so a trainer
computes the same weighted loss packed or padded (:func:`weighted_lm_loss`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from transformers import DataCollatorWithFlattening

from nyxmed.training.loss import IGNORE_INDEX

# Attention implementations whose masks honour packed position_ids in transformers 5.
PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def pack_indices(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Plan packed rows: best-fit decreasing, each row holding at most ``max_tokens`` tokens.

    Returns lists of example indices (longest row first, indices in ascending order inside a
    row). Raises ``ValueError`` naming the example whose length exceeds ``max_tokens``.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"example {i}: length {n} exceeds max_tokens={max_tokens}")
        if n <= 0:
            raise ValueError(f"example {i}: length {n} is not positive")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row id), kept sorted for best fit
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        n = lengths[i]
        pos = bisect.bisect_left(free, (n, -1))
        if pos == len(free):
            rows.append([i])
            bisect.insort(free, (max_tokens - n, len(rows) - 1))
        else:
            room, row = free.pop(pos)
            rows[row].append(i)
            bisect.insort(free, (room - n, row))
    return [sorted(r) for r in rows]


def check_packing_supported(model: Any) -> None:
    """Raise ``ValueError`` if ``model``'s attention would let packed examples see each other."""
    config = getattr(model, "config", model)
    impl = getattr(config, "_attn_implementation", None) or getattr(config, "attn_implementation", None)
    if impl not in PACKING_ATTENTION:
        raise ValueError(f"attn_implementation {impl!r} does not support packed position_ids; "
                         f"use one of {', '.join(PACKING_ATTENTION)}")


@dataclass
class PackingCollator:
    """Collate examples into padding-free packed rows (``DataCollatorWithFlattening`` per row).

    ``max_tokens=None`` flattens the whole micro-batch into one row (TRL's padding-free mode);
    otherwise rows are planned with :func:`pack_indices` and the shorter ones are padded at the
    tail (pad tokens form their own block: labels -100, weight 0). Features need ``input_ids``
    and ``labels``; ``weight`` (per-example loss weight) defaults to 1.0. The batch holds
    ``input_ids``, ``labels``, ``position_ids``, ``token_weights`` (pop it before the forward)
    and ``use_cache=False`` (see the module docstring for why).
    """

    pad_token_id: int
    max_tokens: int | None = None
    weight_key: str = "weight"

    def __post_init__(self) -> None:
        # The first label of each example is set to -100: after the causal shift it would be
        # predicted from the previous example's last token.
        self._flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        for k, f in enumerate(features):
            if len(f["input_ids"]) == 0:
                raise ValueError(f"example {f.get('id', k)}: field input_ids is empty")
            if "labels" not in f or len(f["labels"]) != len(f["input_ids"]):
                raise ValueError(f"example {f.get('id', k)}: field labels missing or not as long as input_ids")
        lengths = [len(f["input_ids"]) for f in features]
        plan = [list(range(len(features)))] if self.max_tokens is None else pack_indices(lengths, self.max_tokens)
        rows = [self._row([features[i] for i in idx]) for idx in plan]
        width = max(r["input_ids"].shape[1] for r in rows)
        out = {key: torch.cat([_pad_tail(r[key], width, fill) for r in rows])
               for key, fill in (("input_ids", self.pad_token_id), ("labels", IGNORE_INDEX),
                                 ("position_ids", None), ("token_weights", 0.0))}
        out["use_cache"] = False
        return out

    def _row(self, feats: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        row = self._flatten([{"input_ids": list(f["input_ids"]), "labels": list(f["labels"])} for f in feats])
        weights = torch.cat([torch.full((len(f["input_ids"]),), float(f.get(self.weight_key, 1.0)))
                             for f in feats])
        row["token_weights"] = weights[None]
        return row


def _pad_tail(t: torch.Tensor, width: int, fill: float | int | None) -> torch.Tensor:
    """Right-pad a [1, L] row to ``width``; ``fill=None`` pads position ids 0, 1, ... (own block)."""
    extra = width - t.shape[1]
    if extra == 0:
        return t
    tail = torch.arange(extra, dtype=t.dtype)[None] if fill is None else torch.full((1, extra), fill, dtype=t.dtype)
    return torch.cat([t, tail], dim=1)
