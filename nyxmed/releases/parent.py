"""The next version on top of a release: ``model.base_model: release:REGISTRY[:VERSION]`` resolves to
that release's merged model (merged on demand with the verified merge, cached by content hash), and
the registry's lineage (parent -> child) is read back for ``releases list``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nyxmed.config import RELEASE_SCHEME, ModelConfig, is_release_spec
from nyxmed.errors import UsageError
from nyxmed.io import read_json, sha256_text
from nyxmed.releases.staging import TRAINING_RECORDS

@dataclass(frozen=True)
class ParentRelease:
    """A release a new version is trained on, and the folder its merged model is in."""

    registry: str
    version: str
    kind: str  # adapter | frozen | merged
    folder: Path  # the release's folder in the registry
    model_dir: Path  # the merged model (the cache folder, or the release itself when it is merged)
    adapter_sha256: str | None
    base_fingerprint: str | None  # the release's own base (what its adapter was merged into)
    preprocessor: Path | None
    preprocessor_id: str | None

    @property
    def training_records(self) -> Path | None:
        """ids and content hashes the parent trained on (``data.previous_manifest`` default), if released."""
        path = self.folder / TRAINING_RECORDS
        return path if path.is_file() else None

    def record(self) -> dict[str, Any]:
        """What the child's training_metrics.json records as its ``parent``."""
        from nyxmed.provenance import base_fingerprint

        return {"version": self.version, "registry": str(self.registry), "kind": self.kind,
                "adapter_sha256": self.adapter_sha256, "base_model_fingerprint": self.base_fingerprint,
                "merged_fingerprint": base_fingerprint(self.model_dir), "preprocessor_id": self.preprocessor_id}


def parse_release_spec(spec: str | None) -> tuple[str, str | None] | None:
    """``release:REGISTRY[:VERSION]`` -> (registry, version or None for production); None for a plain model."""
    if not is_release_spec(spec):
        return None
    rest = spec[len(RELEASE_SCHEME):]
    registry, sep, version = rest.rpartition(":")
    if not sep:
        registry, version = rest, ""
    if not registry:
        raise UsageError(f"model.base_model: {spec!r}: expected release:REGISTRY[:VERSION]")
    return registry, version or None


def release_of(spec: str | None, cache_dir: str | os.PathLike | None = None,
               dtype: str = "bfloat16") -> ParentRelease | None:
    """The release ``spec`` names, without merging (``model_dir`` is where its merge is cached); None for a
    plain model. Raises UsageError for a missing registry, NotFound without a production version."""
    parsed = parse_release_spec(spec)
    if parsed is None:
        return None
    from nyxmed.coder import release_parts  # heavy (training artifacts): only for a release
    from nyxmed.releases.registry import LocalRegistry

    registry_dir, version = parsed
    if not Path(registry_dir).is_dir():
        raise UsageError(f"model.base_model: {spec!r}: no registry folder {registry_dir!r}")
    parts = release_parts(LocalRegistry(registry_dir), version)  # verifies the release's checksums
    metrics = parts.folder / "training_metrics.json"
    fingerprint = read_json(metrics).get("base_model_fingerprint") if metrics.is_file() else None
    if parts.kind == "merged":
        model_dir = parts.folder
    else:
        key = sha256_text(f"{parts.adapter_sha256}\0{fingerprint or parts.base_model}\0{dtype}")[:16]
        model_dir = Path(cache_dir or ModelConfig().merge_cache) / f"{parts.version}-{key}"
    return ParentRelease(registry_dir, parts.version, parts.kind, parts.folder, model_dir, parts.adapter_sha256,
                         fingerprint, parts.preprocessor, parts.preprocessor_id)


def resolve_parent(spec: str | None, cache_dir: str | os.PathLike | None = None,
                   dtype: str = "bfloat16") -> ParentRelease | None:
    """The release ``spec`` names with its merged model ready: reused from ``cache_dir`` when that content
    hash (adapter sha256 + base fingerprint + dtype) was merged before, else merged and verified now."""
    parent = release_of(spec, cache_dir, dtype)
    if parent is None or parent.kind == "merged":
        return parent
    from nyxmed.merge import MANIFEST, MergeError, merge_adapter  # torch: only when there is a release to merge

    if (parent.model_dir / MANIFEST).is_file():
        return parent
    release = read_json(parent.folder / "release.json")
    if not release.get("base_model"):
        raise UsageError(f"release {parent.version} records no base_model: cannot merge it")
    try:
        merge_adapter(release["base_model"], parent.folder, parent.model_dir, dtype=dtype)
    except MergeError:
        if not (parent.model_dir / MANIFEST).is_file():  # another process merged the same content: reuse it
            raise
    return parent


def resolve_eval_model(cfg: Any, model: ModelConfig) -> tuple[Any, ParentRelease | None]:
    """An EvalConfig whose ``model`` names a release, with that release's merged model instead (merged on
    demand into ``model.merge_cache`` at ``model.dtype``, as training does), and the release; else unchanged."""
    from dataclasses import replace

    parent = resolve_parent(cfg.model, model.merge_cache, model.dtype)
    return (cfg, None) if parent is None else (replace(cfg, model=str(parent.model_dir)), parent)


def tokenizer_source(model: Any) -> str:
    """Where the tokenizer of a ``model:`` section is read: ``model.tokenizer``, the release's folder
    (it carries its tokenizer, no merge needed), or ``model.base_model``."""
    if model.tokenizer:
        return model.tokenizer
    parent = release_of(model.base_model)
    return str(parent.folder) if parent else model.base_model


def parent_training_records(spec: str | None) -> Path | None:
    """The ids and content hashes the release ``spec`` names trained on (``data.previous_manifest``'s
    default), or None for a plain model or a release published without them."""
    parent = release_of(spec)
    return parent.training_records if parent else None


def compare_with_parent(parent: ParentRelease, child_adapter: str | os.PathLike, eval_cfg: Any,
                        out_dir: str | os.PathLike) -> dict[str, Any]:
    """Evaluate the parent (its merged model) and the child (that model + ``child_adapter``) on the same
    records of ``eval_cfg`` (``data``/``benchmark``/``split``), then compare them with paired CIs
    (:func:`nyxmed.evaluation.compare_runs`). Writes ``out_dir/{parent,child}/`` and ``comparison.json``;
    returns the comparison (publish it with ``CardInputs(compare=...)``). Refuses a child whose
    training_metrics.json names another parent (or none): the delta would not be this release's."""
    from dataclasses import replace

    from nyxmed.evaluation import compare_runs, evaluate_model, write_comparison

    metrics = Path(child_adapter) / "training_metrics.json"
    recorded = (read_json(metrics).get("parent") or {}) if metrics.is_file() else {}
    if (recorded.get("version"), recorded.get("adapter_sha256")) != (parent.version, parent.adapter_sha256):
        raise UsageError(f"{child_adapter}: trained on parent {recorded.get('version')!r}, not on release "
                         f"{parent.version} of {parent.registry} (its training_metrics.json 'parent')")
    out = Path(out_dir)
    runs = {"parent": (str(parent.model_dir), None), "child": (str(parent.model_dir), str(child_adapter))}
    for name, (model, adapter) in runs.items():
        evaluate_model(replace(eval_cfg, model=model, adapter=adapter, out_dir=str(out / name)))
    comparison = compare_runs(out / "parent", out / "child", eval_cfg.bootstrap, eval_cfg.seed)
    comparison["parent"] = parent.version
    write_comparison(comparison, out, (parent.version, "child"))
    return comparison


def lineage_rows(registry: Any) -> list[dict[str, Any]]:
    """One row per version, oldest first: version, kind, parent (None for a first version), production."""
    production = registry.production()
    return [{"version": r["version"], "kind": r.get("kind"), "parent": (r.get("parent") or {}).get("version"),
             "production": r["version"] == production, "created_at": r.get("created_at")}
            for r in registry.versions()]


__all__ = ["ParentRelease", "RELEASE_SCHEME", "compare_with_parent", "lineage_rows",
           "parent_training_records", "parse_release_spec", "release_of", "resolve_eval_model", "resolve_parent",
           "tokenizer_source"]
