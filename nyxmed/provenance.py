"""Identities recorded at training and checked at merge: the base model's fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nyxmed.errors import InputError

FINGERPRINT_SAMPLE = 1 << 20  # bytes read from each end of every weight file


def base_fingerprint(base_dir: str | os.PathLike) -> str:
    """A cheap identity of a local base folder: config.json, and per weight file its name, size,
    safetensors header and the first and last MiB of data (tells Llama-3-70B from -Instruct without
    reading 140 GB). Raises :class:`InputError` for a folder that is not a transformers model."""
    base_dir = Path(base_dir)
    h = hashlib.sha256()
    config = base_dir / "config.json"
    if not config.is_file():
        raise InputError(f"{base_dir}: no config.json (not a transformers model folder)")
    h.update(config.read_bytes())
    weights = sorted(base_dir.glob("*.safetensors")) or sorted(base_dir.glob("*.bin"))
    if not weights:
        raise InputError(f"{base_dir}: no *.safetensors or *.bin weight files")
    for w in weights:
        size = w.stat().st_size
        h.update(f"{w.name}\0{size}\0".encode())
        with open(w, "rb") as fh:
            h.update(fh.read(FINGERPRINT_SAMPLE))
            fh.seek(max(0, size - FINGERPRINT_SAMPLE))
            h.update(fh.read(FINGERPRINT_SAMPLE))
    return "sha256:" + h.hexdigest()


def local_model_dir(name_or_path: str) -> Path:
    """The local folder of a base model: the folder itself, or a Hub id's cached snapshot
    (after ``from_pretrained`` it is in the cache). Raises :class:`InputError` when neither."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    from transformers.utils import cached_file

    try:
        config = cached_file(name_or_path, "config.json", local_files_only=True)
    except OSError as exc:
        raise InputError(f"model.base_model: {name_or_path!r} is neither a folder nor in the Hub cache: {exc}") \
            from exc
    return Path(config).parent
