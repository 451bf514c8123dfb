"""Publish: stage an adapter, merged model or frozen checkpoint (with its model card) and register it
in a registry; an adapter's ``frozen/epoch-N`` checkpoints become versions ``<version>-epochN``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nyxmed.io import read_jsonl
from nyxmed.releases.card import build_card
from nyxmed.releases.registry import LocalRegistry, Registry
from nyxmed.releases.staging import (PREPROCESSOR_DIR, ReleaseError, Staged, StagingConflict, check_staging_target,
                                     check_version, detect_kind, frozen_checkpoints, numbers_only, stage)


@dataclass(frozen=True)
class CardInputs:
    """Evaluation and data files the model card summarises (all optional)."""

    metrics: str | None = None  # the evaluator's metrics.json
    compare: str | None = None  # comparison.json against the previous version (also stored in the release)
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
    parent = _json(_training_root(folder, kind) / "training_metrics.json").get("parent")
    if isinstance(parent, dict):  # lineage: the release this version was trained on
        extra["parent"] = {k: parent.get(k) for k in ("version", "adapter_sha256", "base_model_fingerprint",
                                                      "merged_fingerprint", "preprocessor_id")}
    if kind == "frozen":
        frozen = numbers_only(_json(folder / "frozen.json"))
        extra["checkpoint"] = {k: frozen[k] for k in ("step", "epoch", "eval_loss") if k in frozen}
    return extra


def _data_out_dir(path: str | os.PathLike) -> Path | None:
    """``<data.out_dir>``: the folder above the dataset a training run's config.yaml trained on, or None."""
    folder = Path(path)
    config = _training_root(folder, detect_kind(folder)) / "config.yaml"
    if not config.is_file():
        return None
    dataset_dir = ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("train") or {}).get("dataset_dir")
    return Path(dataset_dir).parent if dataset_dir else None


def find_preprocessor(path: str | os.PathLike) -> Path | None:
    """The preprocessor a training run's prompts were made with: ``<data.out_dir>/preprocessor`` beside the
    dataset its config.yaml trained on (None when the run records no dataset or it has no preprocessor)."""
    data = _data_out_dir(path)
    found = data / PREPROCESSOR_DIR if data else None
    return found if found and (found / "manifest.json").is_file() else None


def find_training_records(path: str | os.PathLike) -> list[dict[str, Any]] | None:
    """The train split's rows of ``<data.out_dir>/records.jsonl`` (what the next version filters its
    retained set with), or None when the run records no dataset."""
    data = _data_out_dir(path)
    index = data / "records.jsonl" if data else None
    if not index or not index.is_file():
        return None
    return [r for r in read_jsonl(index) if r.get("split") == "train"]


def full_preprocessor_for(registry: Registry | None, include: bool) -> bool:
    """Whether a release carries its whole preprocessor (retrieval pool included) or only its manifest.

    The pool holds training reports (protected health information): a local registry keeps all of it;
    a Hub release carries it only when asked for, and never in a public repository."""
    if isinstance(registry, LocalRegistry):
        return True
    if include and registry is not None and not getattr(registry, "private", False):
        raise StagingConflict(f"{registry!r} is public: a preprocessor holds training reports and is uploaded "
                              "only to a private repository")
    return include


def plan(path: str | os.PathLike, version: str) -> list[tuple[str, Path]]:
    """(version, folder) pairs to release, frozen checkpoints first so the final version is newest."""
    src = Path(path)
    check_version(version)
    kind = detect_kind(src)
    pairs = [(f"{version}-epoch{n}", p) for n, p in frozen_checkpoints(src)] if kind == "adapter" else []
    return pairs + [(version, src)]


def stage_all(path: str | os.PathLike, version: str, workdir: str | os.PathLike, repo_id: str | None,
              inputs: CardInputs = CardInputs(), preprocessor: str | os.PathLike | None = None,
              full_preprocessor: bool = True) -> list[Staged]:
    """Stage every version of :func:`plan` under ``workdir/<version>/`` with its card and ``preprocessor``
    (default: the one the run's dataset was built with, :func:`find_preprocessor`)."""
    preprocessor = preprocessor or find_preprocessor(path)
    pre_card = pre_manifest = None
    if preprocessor is not None:  # verified once here; each staged copy is checked against this manifest
        from nyxmed.preprocessor import verify

        pre_manifest = verify(preprocessor)
        pre_card = {"id": pre_manifest["preprocessor_id"], "complete": full_preprocessor}
    records = find_training_records(path)
    comparison = _json(Path(inputs.compare)) if inputs.compare else None
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
            previous=inputs.previous or (extras.get("parent") or {}).get("version"), config_path=root / "config.yaml" if (root / "config.yaml").is_file() else None,
            training_metrics_path=(root / "training_metrics.json") if (root / "training_metrics.json").is_file()
            else None, dataset_manifest_path=inputs.dataset_manifest, preprocessor=pre_card,
            preprocessor_settings=_json(Path(preprocessor) / "settings.json") if preprocessor else None,
            parent=extras.get("parent"))
        staged.append(stage(folder, v, Path(workdir) / v, extra=extras, card=card, preprocessor=preprocessor,
                            full_preprocessor=full_preprocessor, training_records=records,
                            comparison=comparison if final else None, preprocessor_manifest=pre_manifest))
    return staged


def publish(path: str | os.PathLike, version: str, registry: Registry | None, workdir: str | os.PathLike,
            repo_id: str | None = None, inputs: CardInputs = CardInputs(),
            preprocessor: str | os.PathLike | None = None, include_preprocessor: bool = False) -> list[Staged]:
    """Stage and register every version of ``path``; ``registry=None`` is a dry run (stage only).

    The release carries its preprocessor as :func:`full_preprocessor_for` decides."""
    full = full_preprocessor_for(registry, include_preprocessor)
    staged = stage_all(path, version, workdir, repo_id, inputs, preprocessor, full)
    if registry is not None:
        for s in staged:
            registry.register(s)
    return staged


def describe(staged: list[Staged], target: str, dry_run: bool) -> list[dict[str, Any]]:
    """What was (or would be) done, per version: files with sizes, what was left out."""
    verb = "would register" if dry_run else "registered"
    return [{"action": f"{verb} {s.release['version']} in {target}", "kind": s.kind, "folder": str(s.folder),
             "files": {k: v["bytes"] for k, v in s.release["files"].items()}, "skipped": s.skipped} for s in staged]


__all__ = ["CardInputs", "ReleaseError", "describe", "find_preprocessor", "find_training_records", "plan", "publish", "stage_all"]
