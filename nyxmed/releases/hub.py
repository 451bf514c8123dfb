"""The Hub registry: each version is a commit on ``main`` tagged with its name (``v17``,
``v17-epoch1``) whose root holds that version's files; production is ``releases/production.json`` on
``main``, with the history ``releases/history.jsonl`` beside it; the branch ``production`` follows
the pointer, so ``revision="production"`` loads the version in production.

Every commit to ``main`` names the head it was computed from (``parent_commit``): a promote reads
production, checks and writes the pointer and its history line in one commit, and when someone else
committed in between the Hub refuses it (412) and the promote starts over from the new head.

The token comes from ``HF_TOKEN`` or the user's ``hf auth login``; huggingface_hub sends it in a
header and it is never printed or logged here.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
from typing import Any, Callable

from nyxmed.releases.registry import (MOVES, Registry, history_entry, parse_history, parse_json, parse_pointer,
                                      release_recovery)
from nyxmed.releases.staging import (RELEASE_FILE, ChecksumMismatch, DamagedFile, HubError, ReleaseError, Staged,
                                     VersionNotFound, check_version)

log = logging.getLogger(__name__)

HISTORY_PATH = "releases/history.jsonl"
POINTER_PATH = "releases/production.json"
KEEP = (".gitattributes", "releases/")  # survive the file replacement of each version commit
CONFLICT = (409, 412)  # what the Hub answers a commit whose parent_commit is no longer the head
ATTEMPTS = 30


class _Conflict(Exception):
    """Someone else moved ``main`` or the production branch meanwhile: start over."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _remote(method: Callable) -> Callable:
    """Turn the Hub saying no, no network and offline mode into :class:`HubError` (one line, exit 6)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        from httpx2 import TransportError
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

        try:
            return method(self, *args, **kwargs)
        except RepositoryNotFoundError as exc:
            raise HubError(f"{self.repo_id} on {self.api.endpoint}: repository not found, or no access with "
                           f"this token ({_status(exc)})") from exc
        except HfHubHTTPError as exc:
            raise HubError(f"{self.repo_id} on {self.api.endpoint}: {str(exc).splitlines()[0]}") from exc
        except OfflineModeIsEnabled as exc:
            raise HubError(f"{self.repo_id}: HF_HUB_OFFLINE is set; unset it to reach {self.api.endpoint}") from exc
        except TransportError as exc:
            raise HubError(f"{self.repo_id}: cannot reach {self.api.endpoint} ({type(exc).__name__}: {exc})") from exc
    return call


class HubRegistry(Registry):
    """Versions as tags of a Hub model repo; production as a pointer file on main, followed by a branch."""

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
        raise VersionNotFound(f"version {version!r} is not a tag of {self.repo_id}")

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

    def _commit_main(self, make_ops: Callable[[str | None], list], message: str):
        """Commit ``make_ops(head)`` on main with ``parent_commit=head``; on a conflict, again from the new head."""
        for attempt in range(ATTEMPTS):
            head = self._head("main")
            try:
                return self._commit_on(head, make_ops(head), message)
            except _Conflict:
                _backoff(attempt)
        raise HubError(f"{self.repo_id}: main moved {ATTEMPTS} times while committing {message!r}; try again")

    def _commit_on(self, head: str | None, ops: list, message: str):
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self.api.create_commit(self.repo_id, ops, commit_message=message, revision="main",
                                          parent_commit=head)
        except HfHubHTTPError as exc:
            if _status(exc) in CONFLICT:
                raise _Conflict() from exc
            raise

    def _history_at(self, head: str | None) -> bytes:
        return (self._read(HISTORY_PATH, head) if head else None) or b""

    def _production_at(self, head: str | None) -> str | None:
        data = self._read(POINTER_PATH, head) if head else None
        if data is not None:
            return parse_pointer(data, f"{self.repo_id}:{POINTER_PATH}", f"{self.repo_id}:{HISTORY_PATH}")
        # no pointer yet (or a repo promoted before it existed): the last move in the history, read at the
        # same head, so a concurrent promote's early branch move is never mistaken for production
        moves = [h for h in parse_history(self._history_at(head), f"{self.repo_id}:{HISTORY_PATH}")
                 if h["action"] in MOVES]
        return moves[-1]["version"] if moves else None

    def _point_branch(self, commit: str) -> None:
        """Move the production branch to ``commit`` (delete, re-create; the old head is restored on failure)."""
        from huggingface_hub.errors import HfHubHTTPError

        old = self._head(self.branch)
        if old == commit:
            return
        try:
            if old is not None:
                self.api.delete_branch(self.repo_id, branch=self.branch)
            try:
                self.api.create_branch(self.repo_id, branch=self.branch, revision=commit)
            except HfHubHTTPError as exc:
                if old is not None and _status(exc) not in CONFLICT:
                    self.api.create_branch(self.repo_id, branch=self.branch, revision=old)
                raise
        except HfHubHTTPError as exc:
            if _status(exc) in (404, *CONFLICT):  # another promote is moving it too
                raise _Conflict() from exc
            raise

    def _sync_branch(self) -> None:
        """Make the production branch follow the pointer: repeat until the pointer read after our last
        branch move is the one we moved it to, so the last of concurrent promotes leaves them equal."""
        for attempt in range(ATTEMPTS):
            version = self._production_at(self._head("main"))
            target = self._tag_commit(version)
            try:
                self._point_branch(target)
            except _Conflict:
                _backoff(attempt)
                continue
            if self._production_at(self._head("main")) == version:
                return
        raise HubError(f"{self.repo_id}: the {self.branch} branch kept moving; re-run promote to align it")

    # ------------------------------------------------------------------ interface
    @_remote
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
        local = sorted({*release["files"], RELEASE_FILE})  # the staging marker stays home

        def ops(head: str | None) -> list:
            remote = [s.rfilename for s in self.api.model_info(self.repo_id, revision=head).siblings or []]
            return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(staged.folder / name))
                    for name in local] + [CommitOperationDelete(path_in_repo=name) for name in remote
                                          if name not in local and not name.startswith(KEEP)]

        commit = self._commit_main(ops, f"release {version} ({staged.kind})")
        self.api.create_tag(self.repo_id, tag=version, revision=commit.oid, tag_message=f"nyxmed release {version}")
        self._append(history_entry("register", version, None, kind=release["kind"], commit=commit.oid))
        return release

    @_remote
    def release(self, version: str) -> dict[str, Any]:
        data = self._read(RELEASE_FILE, self._tag_commit(version))
        if data is None:
            raise VersionNotFound(f"version {version} in {self.repo_id} has no {RELEASE_FILE} (not a nyxmed release)")
        return self._parse_release(data, version)

    def _parse_release(self, data: bytes, version: str) -> dict[str, Any]:
        where = f"{self.repo_id}@{version}:{RELEASE_FILE}"
        release = parse_json(data, where, release_recovery(where))
        if not isinstance(release.get("files"), dict):
            raise DamagedFile(f"{where} is damaged (no file list); {release_recovery(where)}")
        return release

    @_remote
    def versions(self) -> list[dict[str, Any]]:
        found = []
        for tag in self._refs().tags:
            data = self._read(RELEASE_FILE, tag.target_commit)
            if data is not None:
                rel = self._parse_release(data, tag.name)
                rel.pop("files", None)
                found.append({**rel, "commit": tag.target_commit})
        return self._in_register_order(found)

    @_remote
    def production(self) -> str | None:
        return self._production_at(self._head("main"))

    @_remote
    def verify(self, version: str) -> None:
        """Compare the Hub's own checksums (LFS sha256, else git blob id) with ``release.json``."""
        commit = self._tag_commit(version)
        release = self.release(version)
        info = self.api.model_info(self.repo_id, revision=commit, files_metadata=True)
        remote = {s.rfilename: s for s in info.siblings or []}
        for name, entry in release["files"].items():
            s = remote.get(name)
            if s is None:
                raise ChecksumMismatch(f"version {version}: file {name} is missing from {self.repo_id}@{commit[:12]}")
            actual, expected = (s.lfs.sha256, entry["sha256"]) if s.lfs else (s.blob_id, entry["git_oid"])
            if actual != expected or (s.size is not None and s.size != entry["bytes"]):
                raise ChecksumMismatch(f"version {version}: file {name}: Hub checksum {actual} ({s.size} bytes) != "
                                   f"recorded {expected} ({entry['bytes']} bytes)")

    @_remote
    def _move(self, choose: Callable[[list[dict[str, Any]]], str], action: str) -> dict[str, Any]:
        """Compare-and-swap: production and the history are read at one head of main and the pointer and
        history line are committed with that head as parent; a conflict starts over from the new head."""
        from huggingface_hub import CommitOperationAdd

        for attempt in range(ATTEMPTS):
            head = self._head("main")
            history = self._history_at(head)
            entry = self._checked_move(choose, action, self._production_at(head),
                                       parse_history(history, f"{self.repo_id}:{HISTORY_PATH}"))
            target = self._tag_commit(entry["version"])
            entry["commit"] = target
            try:
                # the branch first: when the Hub refuses to move it, nothing has been committed
                self._point_branch(target)
            except _Conflict:
                pass  # another promote moves it too; _sync_branch below settles it
            pointer = {"version": entry["version"], "previous": entry["previous"], "at": entry["at"],
                       "commit": target}
            ops = [CommitOperationAdd(POINTER_PATH, (json.dumps(pointer, indent=2) + "\n").encode()),
                   CommitOperationAdd(HISTORY_PATH, history + (json.dumps(entry) + "\n").encode())]
            try:
                self._commit_on(head, ops, f"{action} {entry['version']}")
            except _Conflict:
                _backoff(attempt)
                continue
            self._sync_branch()
            return entry
        raise HubError(f"{self.repo_id}: production moved {ATTEMPTS} times while promoting; try again")

    def _append(self, entry: dict[str, Any]) -> None:
        from huggingface_hub import CommitOperationAdd

        line = (json.dumps(entry) + "\n").encode()
        self._commit_main(lambda head: [CommitOperationAdd(HISTORY_PATH, self._history_at(head) + line)],
                          f"history: {entry['action']} {entry['version']}")

    @_remote
    def history(self) -> list[dict[str, Any]]:
        return parse_history(self._history_at(self._head("main")), f"{self.repo_id}:{HISTORY_PATH}")


def _backoff(attempt: int) -> None:
    """Sleep a little, more after each conflict, jittered so concurrent promotes spread out."""
    time.sleep(random.uniform(0, 0.05 * min(attempt + 1, 8)))
