"""Training inputs: load the built dataset's splits, check them, and pad them into batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from datasets import Dataset, DatasetDict, load_from_disk

from nyxmed.errors import InputError, NotFound
from nyxmed.training.loss import IGNORE_INDEX

# Columns the trainer consumes; every other column of the built dataset is dropped before batching.
TRAIN_COLUMNS = ("input_ids", "attention_mask", "labels", "weight")
SPLITS = ("train", "validation")


def load_training_splits(dataset_dir: str | Path, max_length: int) -> tuple[Dataset, Dataset]:
    """Return the ``train`` and ``validation`` splits of a saved DatasetDict, reduced to :data:`TRAIN_COLUMNS`.

    Raises ``ValueError`` naming the split, record id and field of the first bad record (missing
    column, no answer tokens, longer than ``max_length``, non-positive weight).
    """
    path = Path(dataset_dir)
    if not path.exists():
        raise NotFound(f"train.dataset_dir: {path} does not exist (build it with `nyxmed build-data`)")
    data = load_from_disk(str(path))
    if not isinstance(data, DatasetDict):
        raise InputError(f"train.dataset_dir: {path} holds a single Dataset, expected a DatasetDict with {SPLITS}")
    out = []
    for split in SPLITS:
        if split not in data:
            raise InputError(f"train.dataset_dir: {path} has no '{split}' split (has {sorted(data)})")
        ds = data[split]
        missing = [c for c in TRAIN_COLUMNS if c not in ds.column_names]
        if missing:
            raise InputError(f"train.dataset_dir: split '{split}' lacks column '{missing[0]}'")
        if len(ds) == 0:
            raise InputError(f"train.dataset_dir: split '{split}' is empty")
        _check_records(ds, split, max_length)
        out.append(ds.select_columns(list(TRAIN_COLUMNS)))
    return out[0], out[1]


def _check_records(ds: Dataset, split: str, max_length: int) -> None:
    ids = ds["id"] if "id" in ds.column_names else [str(i) for i in range(len(ds))]
    for rid, ids_, labels, weight in zip(ids, ds["input_ids"], ds["labels"], ds["weight"]):
        where = f"split '{split}' record {rid}"
        if len(labels) != len(ids_):
            raise InputError(f"{where}: field labels has {len(labels)} entries, input_ids {len(ids_)}")
        if len(ids_) > max_length:
            raise InputError(f"{where}: field input_ids has {len(ids_)} tokens > prompt.max_length={max_length}")
        if all(t == IGNORE_INDEX for t in labels[1:]):
            raise InputError(f"{where}: field labels has no answer tokens (all -100)")
        if not weight > 0:
            raise InputError(f"{where}: field weight is {weight!r}, must be > 0")


@dataclass
class PaddedCollator:
    """Right-pad examples into a batch with ``token_weights`` (each example's ``weight`` on its tokens).

    The loss (:func:`nyxmed.training.loss.weighted_lm_loss`) reads ``token_weights``; the trainer pops it
    before the forward pass. Right padding keeps every real token's position id unchanged.
    """

    pad_token_id: int

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": [], "token_weights": []}
        for f in features:
            n, pad = len(f["input_ids"]), width - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            batch["token_weights"].append([float(f["weight"])] * n + [0.0] * pad)
        return {k: torch.tensor(v, dtype=torch.float32 if k == "token_weights" else torch.long)
                for k, v in batch.items()}


def length_grouped_order(lengths: Sequence[int], batch_size: int) -> tuple[list[int], list[int]]:
    """Order examples longest first so each batch of ``batch_size`` holds similar lengths.

    Returns ``(order, inverse)``: batch ``k`` is ``order[k*batch_size:(k+1)*batch_size]`` and
    ``results_in_order[inverse[i]]`` is the result of example ``i``. Longest first makes an
    out-of-memory batch fail at once instead of at the end of a long run.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    inverse = [0] * len(order)
    for pos, i in enumerate(order):
        inverse[i] = pos
    return order, inverse


def length_grouped_batches(lengths: Sequence[int], batch_size: int, steps: int, gen: torch.Generator,
                           group: int = 16) -> list[list[int]]:
    """``steps`` training batches of indices into ``lengths``: epochs of a random permutation, cut into
    mega-batches of ``group`` batches, each ordered by :func:`length_grouped_order` and split into
    batches taken in a random order, so a batch pads little (transformers' ``group_by_length``; a
    quarter of the demo's pre-training tokens were padding with random batches)."""
    if steps > 0 and not lengths:
        raise ValueError("length_grouped_batches: no sequences to draw batches from")
    batches: list[list[int]] = []
    while len(batches) < steps:
        order = torch.randperm(len(lengths), generator=gen).tolist()
        for start in range(0, len(order), batch_size * group):
            mega = order[start: start + batch_size * group]
            ranked = [mega[i] for i in length_grouped_order([lengths[i] for i in mega], batch_size)[0]]
            chunk = [ranked[i: i + batch_size] for i in range(0, len(ranked), batch_size)]
            batches += [chunk[i] for i in torch.randperm(len(chunk), generator=gen).tolist()]
    return batches[:steps]
