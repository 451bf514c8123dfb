"""Release registries behind one interface: a local directory (the embedded default) and the Hub.

A version is an immutable set of files with recorded checksums (``release.json``). Production is a
pointer to one version: promote verifies every checksum first and then moves the pointer in one
atomic step, so a failed or interrupted promote leaves production where it was. Every move is
appended to a history log.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import shutil
import socket
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from nyxmed.io import utc_now, write_atomic
from nyxmed.releases.staging import RELEASE_FILE, ReleaseError, Staged, check_version, file_entry, verify_folder


def history_entry(action: str, version: str | None, previous: str | None, **extra: Any) -> dict[str, Any]:
    return {"at": utc_now(), "action": action, "version": version, "previous": previous,
            "user": getpass.getuser(), "host": socket.gethostname(), **extra}


class Registry(ABC):
    """Versions, a production pointer and an append-only history."""

    @abstractmethod
    def register(self, staged: Staged) -> dict[str, Any]:
        """Store a staged folder as its version (immutable; same content again is a no-op)."""

    @abstractmethod
    def versions(self) -> list[dict[str, Any]]:
        """Release records (release.json without the file list), oldest first."""

    @abstractmethod
    def release(self, version: str) -> dict[str, Any]:
        """The full release.json of ``version``; :class:`ReleaseError` if unknown."""

    @abstractmethod
    def production(self) -> str | None:
        """The version production points at, or None."""

    @abstractmethod
    def verify(self, version: str) -> None:
        """Raise :class:`ReleaseError` unless every stored file of ``version`` has its recorded checksum."""

    @abstractmethod
    def _move_production(self, version: str, entry: dict[str, Any]) -> None:
        """Point production at ``version`` in one step and append ``entry`` to the history."""

    @abstractmethod
    def history(self) -> list[dict[str, Any]]:
        """Every register / promote / rollback, oldest first."""

    def _in_register_order(self, releases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        order = {h["version"]: i for i, h in enumerate(self.history()) if h["action"] == "register"}
        return sorted(releases, key=lambda r: (order.get(r["version"], len(order)), r["version"]))

    def promote(self, version: str, action: str = "promote") -> dict[str, Any]:
        """Verify ``version``, then point production at it; returns the history entry."""
        self.release(version)
        self.verify(version)  # before anything moves: a corrupt version never reaches production
        entry = history_entry(action, version, self.production())
        self._move_production(version, entry)
        return entry

    def rollback(self, to: str | None = None) -> dict[str, Any]:
        """Point production back at ``to`` (e.g. ``v17-epoch1``) or at the version before the current one."""
        if to is None:
            moves = [h for h in self.history() if h["action"] in ("promote", "rollback")]
            if not moves or not moves[-1].get("previous"):
                raise ReleaseError("rollback: no previous production version in the history; pass --to VERSION")
            to = moves[-1]["previous"]
        return self.promote(to, action="rollback")


class LocalRegistry(Registry):
    """A directory registry: ``objects/`` (content-addressed blobs), ``versions/<v>/`` (read-only
    hard-linked views, servable as-is), ``production.json`` (the pointer), ``history.jsonl``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        for sub in ("objects", "versions"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.pointer = self.root / "production.json"
        self.log = self.root / "history.jsonl"

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (two release managers promoting at once must not interleave)."""
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _object(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def path(self, version: str) -> Path:
        """The folder holding ``version`` (serve or load from here)."""
        folder = self.root / "versions" / check_version(version)
        if not (folder / RELEASE_FILE).is_file():
            raise ReleaseError(f"version {version!r} is not in {self.root} (known: "
                               f"{', '.join(v['version'] for v in self.versions()) or 'none'})")
        return folder

    def _store_object(self, src: Path, sha256: str) -> Path:
        dst = self._object(sha256)
        if dst.is_file():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            actual = file_entry(Path(tmp)).sha256
            if actual != sha256:
                raise ReleaseError(f"{src}: changed while registering (sha256 {actual} != {sha256})")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dst

    def register(self, staged: Staged) -> dict[str, Any]:
        release = staged.release
        version = check_version(release["version"])
        with self._locked():
            folder = self.root / "versions" / version
            if (folder / RELEASE_FILE).is_file():
                existing = json.loads((folder / RELEASE_FILE).read_text())
                if {k: v["sha256"] for k, v in existing["files"].items()} != \
                        {k: v["sha256"] for k, v in release["files"].items()}:
                    raise ReleaseError(f"version {version} already exists in {self.root} with different files; "
                                       f"versions are immutable: register under a new version")
                return existing
            verify_folder(staged.folder, release)
            tmp = Path(tempfile.mkdtemp(dir=self.root / "versions", prefix=f".{version}.", suffix=".tmp"))
            try:
                for name, entry in release["files"].items():
                    os.link(self._store_object(staged.folder / name, entry["sha256"]), tmp / name)
                write_atomic(tmp / RELEASE_FILE, json.dumps(release, indent=2) + "\n")
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._append(history_entry("register", version, None, kind=release["kind"]))
        return release

    def release(self, version: str) -> dict[str, Any]:
        return json.loads((self.path(version) / RELEASE_FILE).read_text())

    def versions(self) -> list[dict[str, Any]]:
        found = []
        for f in (self.root / "versions").glob(f"*/{RELEASE_FILE}"):
            rel = json.loads(f.read_text())
            rel.pop("files", None)
            found.append(rel)
        return self._in_register_order(found)

    def production(self) -> str | None:
        if not self.pointer.is_file():
            return None
        return json.loads(self.pointer.read_text())["version"]

    def verify(self, version: str) -> None:
        release = self.release(version)
        for name, entry in release["files"].items():
            obj = self._object(entry["sha256"])
            if not obj.is_file():
                raise ReleaseError(f"version {version}: file {name}: stored object {obj} is missing")
        verify_folder(self.path(version), release)  # the view shares inodes with the objects

    def _move_production(self, version: str, entry: dict[str, Any]) -> None:
        with self._locked():
            pointer = {"version": version, "previous": entry["previous"], "at": entry["at"],
                       "path": str(self.path(version))}
            write_atomic(self.pointer, json.dumps(pointer, indent=2) + "\n")  # temp file + rename: atomic
            self._append(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]
