"""File plumbing: atomic writes and folder swaps, owned output folders."""

from __future__ import annotations

import pytest

from nyxmed.errors import OutputConflict
from nyxmed.io import OWNED_MARKER, atomic_dir, fresh_output_dir, read_json, write_json


def test_fresh_output_dir_replaces_only_what_nyxmed_wrote(tmp_path):
    mine = tmp_path / "user"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputConflict, match="was not written by nyxmed"):
        fresh_output_dir(mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputConflict, match="not a folder"):
        fresh_output_dir(tmp_path / "a-file")
    out = fresh_output_dir(tmp_path / "run")
    (out / "old.txt").write_text("from the last run")
    again = fresh_output_dir(tmp_path / "run")
    assert (again / OWNED_MARKER).is_file() and not (again / "old.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (fresh_output_dir(empty) / OWNED_MARKER).is_file()


def test_atomic_dir_leaves_the_old_folder_on_error(tmp_path):
    dest = tmp_path / "d"
    with atomic_dir(dest) as tmp:
        write_json(tmp / "a.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            write_json(tmp / "a.json", {"v": 2})
            raise RuntimeError("cut off")
    assert read_json(dest / "a.json") == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["d"]
    with pytest.raises(FileExistsError):
        with atomic_dir(dest, replace=False) as tmp:
            pass
