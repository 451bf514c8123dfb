"""What a release is made of: the allow-listed files of an adapter, merged model or frozen checkpoint,
with secrets and free text kept out, plus ``release.json`` (every file's sha256 and git blob id).

Only files on the allow-list leave the machine; anything else in the folder (predictions, samples,
datasets, logs) is skipped and reported. JSON metrics are reduced to numbers so no record text can
ride along in them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nyxmed.errors import (InputError, NotFound, NyxmedError, OutputConflict, RemoteError, UsageError,
                           VerificationError)
from nyxmed.io import OWNED_MARKER, atomic_dir, check_replaceable, jsonl_text, mark_owned, utc_now, write_atomic

RELEASE_FILE = "release.json"
PREPROCESSOR_DIR = "preprocessor"  # a release's preprocessor files live under this folder
# Of a preprocessor, these describe it without any report text; the rest (its retrieval pool and
# indexes) holds training reports, protected health information, and leaves only when asked for.
PREPROCESSOR_DESCRIPTION = ("manifest.json", "settings.json")
# What the next version filters its retained set with: the ids and content hashes the release trained on
# (no report text), and the parent -> child comparison (numbers only).
TRAINING_RECORDS = "training_records.jsonl"
COMPARISON_FILE = "comparison.json"
STAGING_MARKER = OWNED_MARKER  # in every folder stage() writes; only such a folder is ever replaced
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

# Files that may be released, per kind. Everything else is skipped.
ALLOWED = {
    "adapter": ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", "generation_config.json", "config.yaml",
                "training_metrics.json"],
    "frozen": ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "frozen.json"],
    "merged": ["model*.safetensors", "model.safetensors.index.json", "config.json", "generation_config.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
               "merge_manifest.json"],
}
# JSON files reduced to numbers (plus these few short labels) before release.
NUMERIC_JSON = {"training_metrics.json", "frozen.json"}
KEPT_LABELS = {"stop_reason", "best_checkpoint", "metric_for_best_model", "sha256", "manifest_sha256",
               "base_model_fingerprint"}


class ReleaseError(NyxmedError):
    """A release operation that cannot proceed; the message names the version and the file."""


class BadVersion(ReleaseError, UsageError):
    """A version name that is not allowed."""


class VersionNotFound(ReleaseError, NotFound):
    """A version that is not in the registry."""


class NotReleasable(ReleaseError, InputError):
    """A folder that is not an adapter, frozen checkpoint or merged model."""


class DamagedFile(ReleaseError, InputError):
    """A registry file that cannot be read; the message names it and how to recover."""


class StagingConflict(ReleaseError, OutputConflict):
    """A staging target that nyxmed did not create, or that overlaps the folder being released."""


class ChecksumMismatch(ReleaseError, VerificationError):
    """A stored file that is missing or does not have its recorded checksum."""


class HubError(ReleaseError, RemoteError):
    """The Hub refused a request, is unreachable, or there is no network."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    git_oid: str  # git blob sha1: what the Hub reports for non-LFS files
    bytes: int


@dataclass
class Staged:
    """A folder ready to register or upload, and what was left out."""

    folder: Path
    kind: str
    release: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise BadVersion(f"version {version!r}: use letters, digits, '.', '_' or '-' (e.g. v17, v17-epoch1)")
    return version


def detect_kind(path: Path) -> str:
    """adapter | frozen | merged, from the files that define each."""
    if (path / "frozen.json").is_file():
        return "frozen"
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file() and any(path.glob("model*.safetensors")):
        return "merged"
    raise NotReleasable(f"{path}: not an adapter (adapter_config.json), frozen checkpoint (frozen.json) "
                       f"or merged model (config.json + model*.safetensors)")


def frozen_checkpoints(path: Path) -> list[tuple[int, Path]]:
    """The trainer's ``frozen/epoch-N`` folders, by epoch."""
    found = []
    for p in (path / "frozen").glob("epoch-*"):
        m = re.fullmatch(r"epoch-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def file_entry(path: Path, chunk: int = 1 << 24) -> FileEntry:
    size = path.stat().st_size
    sha, git = hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            sha.update(block)
            git.update(block)
    return FileEntry(sha.hexdigest(), git.hexdigest(), size)


def numbers_only(value: Any, keep_text: bool = False) -> Any:
    """Keep numbers, booleans and short one-line text under a few known keys (labels, checksums);
    drop any other text, since it could be record text."""
    if isinstance(value, dict):
        kept = {k: numbers_only(v, keep_text or k in KEPT_LABELS) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not _DROP}
    if isinstance(value, list):
        kept = [numbers_only(v, keep_text) for v in value]
        return [v for v in kept if v is not _DROP]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and keep_text and len(value) <= 160 and "\n" not in value:
        return value
    return _DROP


_DROP = object()
_URL_SECRET = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.I)


def redact_secrets(text: str) -> str:
    """Remove passwords from URLs (``postgresql://user:pw@host`` -> ``postgresql://user:***@host``)."""
    return _URL_SECRET.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


def _release_config(src: Path) -> str:
    """The resolved recipe with URL passwords redacted and case-id lists replaced by their counts."""
    data = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    section = data.get("data") if isinstance(data, dict) else None
    if isinstance(section, dict):
        for key in ("hard_ids", "specificity_ids", "retained"):
            if isinstance(section.get(key), list) and section[key]:
                section[f"{key}_count"] = len(section[key])
                section[key] = []
    return redact_secrets(yaml.safe_dump(data, sort_keys=False))


def _copy_allowed(src: Path, dst: Path, kind: str) -> list[str]:
    patterns = ALLOWED[kind]
    skipped = []
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src).as_posix()
        if p.is_dir() or rel == RELEASE_FILE or rel == "README.md":
            continue
        if "/" in rel:  # sub-folders (checkpoints, logs) are skipped whole; frozen/ ones are their own versions
            top = rel.split("/", 1)[0] + "/"
            if top != "frozen/" and top not in skipped:
                skipped.append(top)
            continue
        if not any(fnmatch.fnmatch(rel, pat) for pat in patterns):
            skipped.append(rel)
            continue
        if rel in NUMERIC_JSON:
            write_atomic(dst / rel, json.dumps(numbers_only(json.loads(p.read_text())), indent=2) + "\n")
        elif rel == "config.yaml":
            write_atomic(dst / rel, _release_config(p))
        else:
            shutil.copy2(p, dst / rel)
    return skipped


def check_staging_target(src: Path, out: Path) -> None:
    """Refuse ``out`` unless it is absent or a staging folder nyxmed wrote, and apart from ``src``."""
    real_src, real_out = src.resolve(), out.resolve()
    if real_out == real_src or real_src in real_out.parents or real_out in real_src.parents:
        raise StagingConflict(f"staging folder {out} overlaps {src}, the folder being released; "
                              f"choose an --out outside it")
    check_replaceable(out, "staging folder", StagingConflict)


def _copy_preprocessor(src: Path, dst: Path, full: bool, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Copy a preprocessor into ``dst/preprocessor/``: every file (``full``) or only the files that describe
    it (manifest and settings, no report text). ``manifest``: what :func:`nyxmed.preprocessor.verify`
    returned for ``src`` (verified now when None). Returns that manifest; :func:`_check_preprocessor_copy`
    checks the copies against it once stage() has hashed them."""
    from nyxmed.preprocessor import verify

    manifest = manifest or verify(src)
    names = ["manifest.json", *manifest["files"]] if full else list(PREPROCESSOR_DESCRIPTION)
    for rel in names:
        target = dst / PREPROCESSOR_DIR / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
    return manifest


def _check_preprocessor_copy(src: Path, manifest: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
    """Every copied preprocessor file has the sha256 its verified manifest records (``files``: the staged
    files' entries, hashed once for release.json); else it changed while it was being released."""
    for rel, want in manifest["files"].items():
        entry = files.get(f"{PREPROCESSOR_DIR}/{rel}")
        if entry is not None and entry["sha256"] != want:
            raise ChecksumMismatch(f"preprocessor {src}: file {rel} changed while it was being released")


def stage(path: str | os.PathLike, version: str, out: str | os.PathLike, extra: dict[str, Any] | None = None,
          card: str | None = None, preprocessor: str | os.PathLike | None = None,
          full_preprocessor: bool = True, training_records: list[dict[str, Any]] | None = None,
          comparison: dict[str, Any] | None = None, preprocessor_manifest: dict[str, Any] | None = None) -> Staged:
    """Copy the releasable files of ``path`` into ``out`` (fresh), the ``preprocessor`` its prompts were
    made with (all of it, or with ``full_preprocessor=False`` only its manifest and settings), the
    ``training_records`` (id, content_hash), the ``comparison`` with its parent (numbers only), README.md
    (``card``) and release.json; return what was staged and what was skipped. ``preprocessor_manifest``:
    the preprocessor's verified manifest when the caller already verified it (else it is verified here).

    ``out`` is replaced only if an earlier stage() wrote it (:class:`StagingConflict` otherwise)."""
    src, out = Path(path), Path(out)
    check_version(version)
    kind = detect_kind(src)
    check_staging_target(src, out)
    with atomic_dir(out) as tmp:  # a failed stage leaves the earlier staging folder as it was
        mark_owned(tmp)
        skipped = _copy_allowed(src, tmp, kind)
        extra = dict(extra or {})
        if preprocessor is not None:
            preprocessor_manifest = _copy_preprocessor(Path(preprocessor), tmp, full_preprocessor,
                                                       preprocessor_manifest)
            extra["preprocessor"] = {"id": preprocessor_manifest["preprocessor_id"], "complete": full_preprocessor}
        if training_records is not None:
            write_atomic(tmp / TRAINING_RECORDS, jsonl_text(
                [{"id": r.get("id"), "content_hash": r.get("content_hash")} for r in training_records]))
        if comparison is not None:
            write_atomic(tmp / COMPARISON_FILE, json.dumps(numbers_only(comparison), indent=2) + "\n")
        if card is not None:
            write_atomic(tmp / "README.md", card)
        files = {p.relative_to(tmp).as_posix(): file_entry(p).__dict__ for p in sorted(tmp.rglob("*"))
                 if p.is_file() and p.name != STAGING_MARKER}
        if preprocessor is not None:
            _check_preprocessor_copy(Path(preprocessor), preprocessor_manifest, files)
        release = {"version": version, "kind": kind, "created_at": utc_now(), "files": files, **extra}
        write_atomic(tmp / RELEASE_FILE, json.dumps(release, indent=2) + "\n")
    return Staged(out, kind, release, skipped)


def verify_folder(folder: Path, release: dict[str, Any]) -> None:
    """Raise :class:`ReleaseError` unless every file of ``release`` is in ``folder`` with its sha256."""
    for name, entry in release["files"].items():
        p = folder / name
        if not p.is_file():
            raise ChecksumMismatch(f"version {release['version']}: file {name} is missing from {folder}")
        actual = file_entry(p).sha256
        if actual != entry["sha256"]:
            raise ChecksumMismatch(f"version {release['version']}: file {name}: sha256 {actual} != recorded "
                               f"{entry['sha256']}")
