"""Publish: stage an adapter, merged model or frozen checkpoint (with its model card) and register it
in a registry; an adapter's ``frozen/epoch-N`` checkpoints become versions ``<version>-epochN``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyxmed.releases.card import build_card
from nyxmed.releases.registry import Registry
from nyxmed.releases.staging import (ReleaseError, Staged, check_staging_target, check_version, detect_kind,
                                     frozen_checkpoints, numbers_only, stage)


@dataclass(frozen=True)
class CardInputs:
    """Evaluation and data files the model card summarises (all optional)."""

    metrics: str | None = None  # the evaluator's metrics.json
    compare: str | None = None  # comparison.json against the previous version
    previous: str | None = None  # the previous version's name, for the comparison table
    dataset_manifest: str | None = None  # the dataset builder's manifest.json
    license: str = "other"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _training_root(folder: Path, kind: str) -> Path:
    """Where config.yaml and training_metrics.json live: the folder, or the adapter above frozen/epoch-N."""
    return folder.parent.parent if kind == "frozen" else folder


def _extras(folder: Path, kind: str) -> dict[str, Any]:
    """Provenance recorded in release.json (numbers and identities only)."""
    extra: dict[str, Any] = {}
    adapter_cfg = _json(folder / "adapter_config.json")
    if adapter_cfg:
        extra["base_model"] = adapter_cfg.get("base_model_name_or_path")
    merge = _json(folder / "merge_manifest.json")
    if merge:
        extra["base_model"] = merge["base"].get("repo_id") or merge["base"].get("given")
        extra["merge"] = {"dtype": merge.get("dtype"), "adapter_checksum": merge["adapter"]["checksum"],
                          "base_fingerprint": merge["base"].get("fingerprint"),
                          "verification_ok": merge.get("verification", {}).get("ok")}
    if kind == "frozen":
        frozen = numbers_only(_json(folder / "frozen.json"))
        extra["checkpoint"] = {k: frozen[k] for k in ("step", "epoch", "eval_loss") if k in frozen}
    return extra


def plan(path: str | os.PathLike, version: str) -> list[tuple[str, Path]]:
    """(version, folder) pairs to release, frozen checkpoints first so the final version is newest."""
    src = Path(path)
    check_version(version)
    kind = detect_kind(src)
    pairs = [(f"{version}-epoch{n}", p) for n, p in frozen_checkpoints(src)] if kind == "adapter" else []
    return pairs + [(version, src)]


def stage_all(path: str | os.PathLike, version: str, workdir: str | os.PathLike, repo_id: str | None,
              inputs: CardInputs = CardInputs()) -> list[Staged]:
    """Stage every version of :func:`plan` under ``workdir/<version>/`` with its card."""
    versions = plan(path, version)
    for v, _ in versions:  # every target checked before anything is written
        check_staging_target(Path(path), Path(workdir) / v)
    staged = []
    for v, folder in versions:
        kind = detect_kind(folder)
        root = _training_root(folder, kind)
        extras = _extras(folder, kind)
        final = v == version
        card = build_card(
            repo_id=repo_id, version=v, kind=kind, base_model=extras.get("base_model"), license=inputs.license,
            metrics_path=inputs.metrics if final else None, compare_path=inputs.compare if final else None,
            previous=inputs.previous, config_path=root / "config.yaml" if (root / "config.yaml").is_file() else None,
            training_metrics_path=(root / "training_metrics.json") if (root / "training_metrics.json").is_file()
            else None, dataset_manifest_path=inputs.dataset_manifest)
        staged.append(stage(folder, v, Path(workdir) / v, extra=extras, card=card))
    return staged


def publish(path: str | os.PathLike, version: str, registry: Registry | None, workdir: str | os.PathLike,
            repo_id: str | None = None, inputs: CardInputs = CardInputs()) -> list[Staged]:
    """Stage and register every version of ``path``; ``registry=None`` is a dry run (stage only)."""
    staged = stage_all(path, version, workdir, repo_id, inputs)
    if registry is not None:
        for s in staged:
            registry.register(s)
    return staged


def describe(staged: list[Staged], target: str, dry_run: bool) -> list[dict[str, Any]]:
    """What was (or would be) done, per version: files with sizes, what was left out."""
    verb = "would register" if dry_run else "registered"
    return [{"action": f"{verb} {s.release['version']} in {target}", "kind": s.kind, "folder": str(s.folder),
             "files": {k: v["bytes"] for k, v in s.release["files"].items()}, "skipped": s.skipped} for s in staged]


__all__ = ["CardInputs", "ReleaseError", "describe", "plan", "publish", "stage_all"]
