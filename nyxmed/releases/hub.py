"""The Hub registry: each version is a commit on ``main`` tagged with its name (``v17``,
``v17-epoch1``) whose root holds that version's files; production is the branch ``production``,
moved to a version's commit; the history is ``releases/history.jsonl`` on ``main``.

The token comes from ``HF_TOKEN`` or the user's ``hf auth login``; huggingface_hub sends it in a
header and it is never printed or logged here.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from nyxmed.releases.registry import Registry, history_entry
from nyxmed.releases.staging import RELEASE_FILE, ReleaseError, Staged, check_version

log = logging.getLogger(__name__)

HISTORY_PATH = "releases/history.jsonl"
KEEP = (".gitattributes", "releases/")  # survive the file replacement of each version commit


class HubRegistry(Registry):
    """Versions as tags of a Hub model repo, production as a branch that is moved."""

    def __init__(self, repo_id: str, *, endpoint: str | None = None, token: str | None = None,
                 private: bool = True, branch: str = "production"):
        from huggingface_hub import HfApi

        self.repo_id, self.branch, self.private = repo_id, branch, private
        self.api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)

    def __repr__(self) -> str:  # never shows the token
        return f"HubRegistry({self.repo_id!r}, endpoint={self.api.endpoint!r})"

    # ------------------------------------------------------------------ refs and files
    def _refs(self):
        return self.api.list_repo_refs(self.repo_id)

    def _tag_commit(self, version: str) -> str:
        for tag in self._refs().tags:
            if tag.name == version:
                return tag.target_commit
        raise ReleaseError(f"version {version!r} is not a tag of {self.repo_id}")

    def _read(self, path: str, revision: str) -> bytes | None:
        """A file's bytes at ``revision``, or None when absent."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

        url = hf_hub_url(self.repo_id, path, revision=revision, endpoint=self.api.endpoint)
        response = get_session().get(url, headers=build_hf_headers(token=self.api.token), follow_redirects=True)
        if response.status_code == 404:
            return None
        hf_raise_for_status(response)
        return response.content

    def _head(self, branch: str = "main") -> str | None:
        for ref in self._refs().branches:
            if ref.name == branch:
                return ref.target_commit
        return None

    # ------------------------------------------------------------------ interface
    def register(self, staged: Staged) -> dict[str, Any]:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        release = staged.release
        version = check_version(release["version"])
        self.api.create_repo(self.repo_id, private=self.private, exist_ok=True)
        if any(t.name == version for t in self._refs().tags):
            existing = self.release(version)
            if {k: v["sha256"] for k, v in existing["files"].items()} != \
                    {k: v["sha256"] for k, v in release["files"].items()}:
                raise ReleaseError(f"version {version} already exists in {self.repo_id} with different files; "
                                   f"versions are immutable: publish under a new version")
            return existing
        head = self._head("main")
        remote = [s.rfilename for s in self.api.model_info(self.repo_id, revision=head).siblings or []]
        local = sorted(p.name for p in staged.folder.iterdir() if p.is_file())
        ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staged.folder / name)) for name in local]
        ops += [CommitOperationDelete(path_in_repo=name) for name in remote
                if name not in local and not name.startswith(KEEP)]
        commit = self.api.create_commit(self.repo_id, ops, commit_message=f"release {version} ({staged.kind})",
                                        revision="main", parent_commit=head)
        self.api.create_tag(self.repo_id, tag=version, revision=commit.oid, tag_message=f"nyxmed release {version}")
        self._append(history_entry("register", version, None, kind=release["kind"], commit=commit.oid))
        return release

    def release(self, version: str) -> dict[str, Any]:
        data = self._read(RELEASE_FILE, self._tag_commit(version))
        if data is None:
            raise ReleaseError(f"version {version} in {self.repo_id} has no {RELEASE_FILE} (not a nyxmed release)")
        return json.loads(data)

    def versions(self) -> list[dict[str, Any]]:
        found = []
        for tag in self._refs().tags:
            data = self._read(RELEASE_FILE, tag.target_commit)
            if data is not None:
                rel = json.loads(data)
                rel.pop("files", None)
                found.append({**rel, "commit": tag.target_commit})
        return self._in_register_order(found)

    def production(self) -> str | None:
        head = self._head(self.branch)
        if head is None:
            return None
        tags = [t.name for t in self._refs().tags if t.target_commit == head]
        return tags[0] if tags else head

    def verify(self, version: str) -> None:
        """Compare the Hub's own checksums (LFS sha256, else git blob id) with ``release.json``."""
        commit = self._tag_commit(version)
        release = self.release(version)
        info = self.api.model_info(self.repo_id, revision=commit, files_metadata=True)
        remote = {s.rfilename: s for s in info.siblings or []}
        for name, entry in release["files"].items():
            s = remote.get(name)
            if s is None:
                raise ReleaseError(f"version {version}: file {name} is missing from {self.repo_id}@{commit[:12]}")
            actual, expected = (s.lfs.sha256, entry["sha256"]) if s.lfs else (s.blob_id, entry["git_oid"])
            if actual != expected or (s.size is not None and s.size != entry["bytes"]):
                raise ReleaseError(f"version {version}: file {name}: Hub checksum {actual} ({s.size} bytes) != "
                                   f"recorded {expected} ({entry['bytes']} bytes)")

    def _move_production(self, version: str, entry: dict[str, Any]) -> None:
        """The Hub has no atomic branch move: delete and re-create; on failure restore the old head."""
        target, old = self._tag_commit(version), self._head(self.branch)
        if old is not None:
            self.api.delete_branch(self.repo_id, branch=self.branch)
        try:
            self.api.create_branch(self.repo_id, branch=self.branch, revision=target)
        except Exception:
            if old is not None:
                self.api.create_branch(self.repo_id, branch=self.branch, revision=old)
            raise
        self._append({**entry, "commit": target})

    def _append(self, entry: dict[str, Any]) -> None:
        from huggingface_hub import CommitOperationAdd

        head = self._head("main")
        current = self._read(HISTORY_PATH, head) or b""
        line = (json.dumps(entry) + "\n").encode()
        self.api.create_commit(self.repo_id, [CommitOperationAdd(HISTORY_PATH, current + line)],
                               commit_message=f"history: {entry['action']} {entry['version']}", revision="main",
                               parent_commit=head)

    def history(self) -> list[dict[str, Any]]:
        data = self._read(HISTORY_PATH, "main") or b""
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

