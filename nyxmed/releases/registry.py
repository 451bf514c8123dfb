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
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from nyxmed.io import utc_now, write_atomic
from nyxmed.releases.staging import (RELEASE_FILE, ChecksumMismatch, DamagedFile, ReleaseError, Staged,
                                     VersionNotFound, check_version, file_entry, verify_folder)

MOVES = ("promote", "rollback")  # the history actions that move production


def history_entry(action: str, version: str | None, previous: str | None, **extra: Any) -> dict[str, Any]:
    """One history line. ``id`` is unique per call: two identical moves in the same second by the same
    user are two lines (on the Hub an identical commit would be skipped as empty and one move lost)."""
    return {"at": utc_now(), "action": action, "version": version, "previous": previous,
            "user": getpass.getuser(), "host": socket.gethostname(), "id": uuid.uuid4().hex, **extra}


def parse_json(data: str | bytes, where: str, recovery: str) -> dict[str, Any]:
    """One registry JSON object; :class:`DamagedFile` naming ``where`` and ``recovery`` if it is not one."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{where} is damaged ({exc}); {recovery}") from None
    if not isinstance(obj, dict):
        raise DamagedFile(f"{where} is damaged (not a JSON object); {recovery}")
    return obj


def parse_history(data: str | bytes, where: str) -> list[dict[str, Any]]:
    """The history log's entries; a torn or damaged line is a :class:`DamagedFile` naming the line."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lines = text.splitlines()
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = n == len(lines)
        recovery = ("the last line is an append that was cut off: remove that line, then check production "
                    "(`nyxmed releases list`) and re-run the interrupted command" if last else
                    f"restore {where} from a backup, or repair line {n} by hand from the other lines")
        entry = parse_json(line, f"{where} line {n}", recovery)
        if not {"action", "version"} <= entry.keys():
            raise DamagedFile(f"{where} line {n} is damaged (no action/version); {recovery}")
        entries.append(entry)
    return entries


def parse_pointer(data: str | bytes, where: str, history: str) -> str:
    """The version a production pointer names; never a silent reset: damage is a :class:`DamagedFile`."""
    recovery = (f"production is unknown and was not reset. The last promote/rollback in {history} names the "
                f"version production held: write that pointer back (or remove {where} and run "
                f"`nyxmed releases promote <that version>`)")
    pointer = parse_json(data, where, recovery)
    if not isinstance(pointer.get("version"), str):
        raise DamagedFile(f"{where} is damaged (no version); {recovery}")
    return pointer["version"]


def release_recovery(where: str) -> str:
    return (f"restore {where} from the staging folder the version was registered from "
            f"(<--out>/<version>/{RELEASE_FILE}, the same bytes), or register the source under a new version")


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
        """The full release.json of ``version``; :class:`VersionNotFound` if unknown."""

    @abstractmethod
    def production(self) -> str | None:
        """The version production points at, or None."""

    @abstractmethod
    def verify(self, version: str) -> None:
        """Raise :class:`ChecksumMismatch` unless every stored file of ``version`` has its recorded checksum."""

    @abstractmethod
    def _move(self, choose: Callable[[list[dict[str, Any]]], str], action: str) -> dict[str, Any]:
        """Under one lock (or compare-and-swap): read production and the history, ``choose`` the target
        from the moves so far, check it (:meth:`_checked_move`), point production at it, append the entry."""

    @abstractmethod
    def history(self) -> list[dict[str, Any]]:
        """Every register / promote / rollback, oldest first."""

    def _in_register_order(self, releases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        order = {h["version"]: i for i, h in enumerate(self.history()) if h["action"] == "register"}
        return sorted(releases, key=lambda r: (order.get(r["version"], len(order)), r["version"]))

    def _checked_move(self, choose: Callable[[list[dict[str, Any]]], str], action: str, production: str | None,
                      history: list[dict[str, Any]]) -> dict[str, Any]:
        """The history entry of the move ``choose`` picks, after verifying the target's checksums."""
        version = choose([h for h in history if h["action"] in MOVES])
        self.release(version)
        self.verify(version)  # before anything moves: a corrupt version never reaches production
        return history_entry(action, version, production)

    def promote(self, version: str) -> dict[str, Any]:
        """Verify ``version``, then point production at it; returns the history entry."""
        return self._move(lambda moves: version, "promote")

    def rollback(self, to: str | None = None) -> dict[str, Any]:
        """Point production back at ``to`` (e.g. ``v17-epoch1``) or at the version before the current one."""
        def target(moves: list[dict[str, Any]]) -> str:
            if to is not None:
                return to
            if not moves or not moves[-1].get("previous"):
                raise VersionNotFound("rollback: no previous production version in the history; pass --to VERSION")
            return moves[-1]["previous"]

        return self._move(target, "rollback")


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
            raise VersionNotFound(f"version {version!r} is not in {self.root} (known: "
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
                existing = self._read_release(folder / RELEASE_FILE)
                if {k: v["sha256"] for k, v in existing["files"].items()} != \
                        {k: v["sha256"] for k, v in release["files"].items()}:
                    raise ReleaseError(f"version {version} already exists in {self.root} with different files; "
                                       f"versions are immutable: register under a new version")
                return existing
            verify_folder(staged.folder, release)
            tmp = Path(tempfile.mkdtemp(dir=self.root / "versions", prefix=f".{version}.", suffix=".tmp"))
            try:
                for name, entry in release["files"].items():
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)  # preprocessor/ files
                    os.link(self._store_object(staged.folder / name, entry["sha256"]), tmp / name)
                write_atomic(tmp / RELEASE_FILE, json.dumps(release, indent=2) + "\n")
                os.replace(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._append(history_entry("register", version, None, kind=release["kind"]))
        return release

    @staticmethod
    def _read_release(path: Path) -> dict[str, Any]:
        release = parse_json(path.read_bytes(), str(path), release_recovery(str(path)))
        if not isinstance(release.get("files"), dict):
            raise DamagedFile(f"{path} is damaged (no file list); {release_recovery(str(path))}")
        return release

    def release(self, version: str) -> dict[str, Any]:
        return self._read_release(self.path(version) / RELEASE_FILE)

    def versions(self) -> list[dict[str, Any]]:
        found = []
        for f in sorted((self.root / "versions").glob(f"*/{RELEASE_FILE}")):
            rel = self._read_release(f)
            rel.pop("files", None)
            found.append(rel)
        return self._in_register_order(found)

    def production(self) -> str | None:
        if not self.pointer.is_file():
            return None
        return parse_pointer(self.pointer.read_bytes(), str(self.pointer), str(self.log))

    def verify(self, version: str) -> None:
        release = self.release(version)
        for name, entry in release["files"].items():
            obj = self._object(entry["sha256"])
            if not obj.is_file():
                raise ChecksumMismatch(f"version {version}: file {name}: stored object {obj} is missing")
        verify_folder(self.path(version), release)  # the view shares inodes with the objects

    def _move(self, choose: Callable[[list[dict[str, Any]]], str], action: str) -> dict[str, Any]:
        with self._locked():  # read, check and write under one lock: `previous` is what production really was
            entry = self._checked_move(choose, action, self.production(), self.history())
            pointer = {"version": entry["version"], "previous": entry["previous"], "at": entry["at"],
                       "path": str(self.path(entry["version"]))}
            write_atomic(self.pointer, json.dumps(pointer, indent=2) + "\n")  # temp file, fsync, rename
            self._append(entry)
        return entry

    def _append(self, entry: dict[str, Any]) -> None:
        """Append one line in one write, fsynced; refuse to glue it onto a torn last line."""
        data = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                parse_history(os.pread(fd, size, 0), str(self.log))  # names the torn line
                raise DamagedFile(f"{self.log} does not end in a newline; add one, then re-run")
            if os.write(fd, data) != len(data):
                raise DamagedFile(f"{self.log}: short write while appending; check its last line")
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self) -> list[dict[str, Any]]:
        if not self.log.is_file():
            return []
        return parse_history(self.log.read_bytes(), str(self.log))
