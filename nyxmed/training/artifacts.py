"""Training artifacts: atomic adapter export and verification, checksums, metrics, loss plot, provenance."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

from safetensors import safe_open

from nyxmed.errors import VerificationError
from nyxmed.io import replace_dir, sha256_file, write_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
COMPLETE = "COMPLETE"  # commit marker: written last, after every other file of a folder
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Written by Trainer._save next to the adapter; a pickle of TrainingArguments nobody needs downstream.
_DROP_FROM_EXPORT = ("training_args.bin",)


class AdapterError(VerificationError, RuntimeError):
    """A saved adapter is missing, empty or shaped unlike the trained model (the ZeRO-3 save pitfall)."""


def checksums(folder: str | Path) -> dict[str, str]:
    """sha256 of every file in ``folder`` (recursive), keyed by relative path; the marker excluded."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != COMPLETE}


def expected_adapter_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Full shapes of the trainable (LoRA) parameters, keyed as PEFT saves them.

    Under ZeRO-3 a parameter's local tensor is an empty shard; ``ds_shape`` is its full shape.
    """
    adapter = getattr(model, "active_adapter", "default")
    shapes = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            shape = tuple(getattr(p, "ds_shape", p.shape))
            shapes[name.replace(f".{adapter}.", ".")] = shape
    return shapes


def verify_adapter(folder: str | Path, expected: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Check that ``folder`` holds every expected tensor with its full shape and non-zero content.

    Returns a summary (tensor count, parameter count). Raises :class:`AdapterError` naming the
    first missing, misshapen or empty tensor: an adapter saved from ZeRO-3 shards without a
    gather has empty or partial tensors and must never pass as complete.
    """
    folder = Path(folder)
    for name in (ADAPTER_WEIGHTS, ADAPTER_CONFIG):
        if not (folder / name).is_file():
            raise AdapterError(f"{folder}: {name} missing")
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as fh:
        saved = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
        if set(saved) != set(expected):
            missing = sorted(set(expected) - set(saved))
            extra = sorted(set(saved) - set(expected))
            raise AdapterError(f"{folder / ADAPTER_WEIGHTS}: tensor names differ from the model's trainable "
                               f"parameters (missing {missing[:3]}, unexpected {extra[:3]})")
        for key, shape in expected.items():
            if saved[key] != shape or 0 in shape:
                raise AdapterError(f"{folder / ADAPTER_WEIGHTS}: tensor {key} has shape {saved[key]}, expected {shape}")
        # lora_B starts at zero, so only lora_A can prove the tensors hold real values.
        for key in (k for k in expected if "lora_A" in k):
            if not fh.get_tensor(key).abs().sum() > 0:
                raise AdapterError(f"{folder / ADAPTER_WEIGHTS}: tensor {key} is all zeros")
    return {"tensors": len(saved), "parameters": sum(_numel(s) for s in saved.values())}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def save_verified(save: Callable[[Path], None], folder: str | Path, expected: dict[str, tuple[int, ...]],
                  is_writer: bool) -> dict[str, Any] | None:
    """Call ``save(folder)`` on every rank (the ZeRO-3 gather is collective), then verify on the writer.

    Returns the writer's :func:`verify_adapter` summary (None on other ranks). ``folder`` is
    emptied first; it should be a temp folder that is renamed into place afterwards.
    """
    folder = Path(folder)
    if is_writer:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    save(folder)
    if not is_writer:
        return None
    for name in _DROP_FROM_EXPORT:
        (folder / name).unlink(missing_ok=True)
    return verify_adapter(folder, expected)


def export_adapter(save: Callable[[Path], None], dest: str | Path, expected: dict[str, tuple[int, ...]],
                   meta: dict[str, Any], is_writer: bool, meta_name: str) -> Path:
    """Save a self-contained adapter folder ``dest`` atomically: temp folder, verify, ``meta_name``, rename.

    The JSON in ``meta_name`` (``meta``, the adapter summary, sha256 of each file) is written last
    inside the temp folder and the rename is the commit point, so ``dest`` is whole or absent.
    """
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp"
    summary = save_verified(save, tmp, expected, is_writer)
    if is_writer:
        write_json(tmp / meta_name, {**meta, "adapter": summary, "sha256": checksums(tmp)})
        replace_dir(tmp, dest)
    return dest


def complete_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Trainer checkpoints that carry the :data:`COMPLETE` marker, oldest first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / COMPLETE).is_file()]


def remove_incomplete_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """Delete checkpoints without the marker (cut off mid-save); returns what was removed."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    complete = set(complete_checkpoints(folder))
    removed = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name) and p.is_dir() and p not in complete]
    for p in removed:
        shutil.rmtree(p)
    return removed


def file_sha256_or_none(path: str | Path) -> str | None:
    path = Path(path)
    return sha256_file(path) if path.is_file() else None


def git_commit(start: str | Path | None = None) -> dict[str, Any] | None:
    """The commit (and whether the tree is dirty) of the repository holding ``start``; None outside git."""
    cwd = Path(start or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def plot_loss_curves(log_history: list[dict[str, Any]], path: str | Path) -> Path:
    """PNG of the train and eval loss against the optimizer step (matplotlib Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weighted answer-token loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=".loss_curves.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return Path(path)
