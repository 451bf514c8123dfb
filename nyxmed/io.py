"""File plumbing, once: atomic file writes and folder swaps, JSON/JSONL, sha256, UTC timestamps, tables.

Every artifact nyxmed writes goes through :func:`write_atomic` or :func:`atomic_dir`, so a reader
sees the old version or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from nyxmed.errors import OutputConflict

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> str:
    """The current UTC time as ``2026-12-01T21:40:00Z`` (the one timestamp format of every artifact)."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime())


@functools.lru_cache(maxsize=1)  # read once: os.umask can only be read by setting it
def _file_mode() -> int:
    """The mode ``open()`` would give a new file under the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    """Hex sha256 of one file, streamed (artifact checksums everywhere use this)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str | bytes) -> str:
    """Hex sha256 of a text (UTF-8) or bytes."""
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file via a temp file in the same folder, fsync and rename, so readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600 files; artifacts are read by other users
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """``obj`` as JSON (``default=str``), written atomically with a final newline."""
    return write_atomic(path, json.dumps(obj, indent=indent, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def jsonl_text(rows: Iterable[Any], ensure_ascii: bool = True) -> str:
    """One JSON document per line."""
    return "".join(json.dumps(r, ensure_ascii=ensure_ascii, default=str) + "\n" for r in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any], ensure_ascii: bool = True) -> Path:
    """Rows as JSONL, written atomically."""
    return write_atomic(path, jsonl_text(rows, ensure_ascii))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """Every non-blank line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def replace_dir(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Move folder ``src`` to ``dest``, replacing an older ``dest``; each step is a rename.

    The older ``dest`` is moved aside first and removed only after the new one is in place.
    """
    src, dest = Path(src), Path(dest)
    old = dest.parent / f".{dest.name}.{os.getpid()}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.rename(dest, old)
    os.rename(src, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``dest``; on success it becomes ``dest`` in one rename.

    On an error the temp folder is removed and ``dest`` is untouched. With ``replace=False`` an
    existing ``dest`` is left alone and :class:`FileExistsError` is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        yield tmp
        if dest.exists() and not replace:
            raise OutputConflict(f"{dest}: appeared while it was being written; not replacing it")
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells are written with ``str``."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


OWNED_MARKER = ".nyxmed-output"  # in every folder nyxmed may later replace whole (outputs, staging folders)
EARLIER_MARKERS = (".nyxmed-staging",)  # what staging folders of earlier releases carry: still nyxmed's


def is_owned(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a real folder (not a link) that nyxmed wrote: it carries :data:`OWNED_MARKER`."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and any(
        (path / m).is_file() for m in (OWNED_MARKER, *EARLIER_MARKERS))


def check_replaceable(path: str | os.PathLike, what: str = "output folder", error: type | None = None) -> None:
    """Refuse ``path`` unless it is absent, an empty folder, or a folder nyxmed wrote (:func:`is_owned`):
    ``error`` (default OutputConflict) names it, and nothing is touched."""
    from nyxmed.errors import OutputConflict

    path, error = Path(path), error or OutputConflict
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise error(f"{what} {path} exists and is not a folder; choose another one")
    if path.is_dir() and any(path.iterdir()) and not is_owned(path):
        raise error(f"{what} {path} exists, is not empty and was not written by nyxmed (no {OWNED_MARKER}); "
                    f"not replacing it: choose another one or remove it yourself")


def mark_owned(path: str | os.PathLike) -> None:
    """Write :data:`OWNED_MARKER` into the folder ``path`` (the next run into it may replace it)."""
    (Path(path) / OWNED_MARKER).write_text("written by nyxmed; the next run into this folder replaces it\n")


def fresh_output_dir(path: str | os.PathLike) -> Path:
    """An empty folder at ``path`` that nyxmed owns; an earlier one it wrote (with :data:`OWNED_MARKER`) is
    replaced, an empty one is taken, anything else is refused with OutputConflict and left untouched."""
    path = Path(path)
    check_replaceable(path)
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark_owned(path)
    return path


def check_outputs(inputs: Iterable[str | os.PathLike | None], outputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse, before anything is written, an output that is, contains or lies inside an input.

    Paths are compared as resolved real paths (symlinks followed); ``None`` and URLs
    (``postgresql://...``) are skipped. Raises :class:`~nyxmed.errors.OutputConflict` naming both.
    """
    real_inputs = [(p, Path(p).resolve()) for p in inputs if p is not None and "://" not in str(p)]
    for out in outputs:
        if out is None or "://" in str(out):
            continue
        real_out = Path(out).resolve()
        for given, real_in in real_inputs:
            if real_out == real_in or real_out in real_in.parents or real_in in real_out.parents:
                raise OutputConflict(f"output {str(out)!r} overlaps input {str(given)!r} (is, contains or lies "
                                     "inside it): nothing written; choose another output path")
