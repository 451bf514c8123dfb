"""Releases: stage and publish adapters, merged models and frozen checkpoints; registries with a
production pointer, promote (checksums first) and rollback; the model card."""

from __future__ import annotations

import os

from nyxmed.releases.registry import LocalRegistry, Registry
from nyxmed.releases.staging import ReleaseError

DEFAULT_REGISTRY = "out/registry"


def open_registry(registry_dir: str | None = None, repo: str | None = None) -> Registry:
    """The Hub registry of ``repo``, else the local one at ``registry_dir`` ($NYXMED_REGISTRY, out/registry)."""
    if repo:
        from nyxmed.releases.hub import HubRegistry

        return HubRegistry(repo)
    return LocalRegistry(registry_dir or os.environ.get("NYXMED_REGISTRY") or DEFAULT_REGISTRY)


__all__ = ["DEFAULT_REGISTRY", "LocalRegistry", "Registry", "ReleaseError", "open_registry"]
