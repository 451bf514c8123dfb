"""The local release registry: register, promote (checksums first), rollback, history, crash safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest

from nyxmed.errors import InputError, NotFound, VerificationError
from nyxmed.releases import LocalRegistry, ReleaseError
from nyxmed.releases.publish import publish


@pytest.fixture()
def registry(tmp_path, trained_adapter_dir):
    reg = LocalRegistry(tmp_path / "registry")
    publish(trained_adapter_dir, "v1", reg, tmp_path / "stage1")
    return reg


def _register_v2(reg, tmp_path, trained_adapter_dir):
    src = Path(shutil.copytree(trained_adapter_dir, tmp_path / "v2src"))
    shutil.rmtree(src / "frozen")
    metrics = json.loads((src / "training_metrics.json").read_text())
    (src / "training_metrics.json").write_text(json.dumps({**metrics, "global_step": 99}))
    publish(src, "v2", reg, tmp_path / "stage2")


def test_register_stores_versions_and_frozen_checkpoints(registry, trained_adapter_dir):
    versions = [v["version"] for v in registry.versions()]
    assert versions == ["v1-epoch1", "v1-epoch2", "v1"]
    kinds = {v["version"]: v["kind"] for v in registry.versions()}
    assert kinds == {"v1-epoch1": "frozen", "v1-epoch2": "frozen", "v1": "adapter"}
    folder = registry.path("v1")
    assert (folder / "adapter_model.safetensors").read_bytes() == \
        (trained_adapter_dir / "adapter_model.safetensors").read_bytes()
    assert not (folder / "frozen").exists()
    epoch1 = registry.path("v1-epoch1")
    assert (epoch1 / "adapter_model.safetensors").read_bytes() == \
        (trained_adapter_dir / "frozen/epoch-1/adapter_model.safetensors").read_bytes()
    assert registry.release("v1-epoch1")["checkpoint"] == {"step": 10, "epoch": 1.0, "eval_loss": 1.9}
    # one object per distinct content: the tokenizer files are shared by all three versions
    objects = [p for p in (registry.root / "objects").rglob("*") if p.is_file()]
    all_sums = {e["sha256"] for v in versions for e in registry.release(v)["files"].values()}
    assert len(objects) == len(all_sums)
    assert [h["action"] for h in registry.history()] == ["register"] * 3
    assert registry.production() is None


def test_versions_are_immutable(registry, tmp_path, trained_adapter_dir):
    publish(trained_adapter_dir, "v1", registry, tmp_path / "again")  # same content: no-op
    assert len(registry.history()) == 3
    other = Path(shutil.copytree(trained_adapter_dir, tmp_path / "other"))
    shutil.rmtree(other / "frozen")
    (other / "config.yaml").write_text("name: changed\n")
    with pytest.raises(ReleaseError, match="v1 already exists .* immutable"):
        publish(other, "v1", registry, tmp_path / "stage-other")


def test_promote_rollback_and_history(registry, tmp_path, trained_adapter_dir):
    _register_v2(registry, tmp_path, trained_adapter_dir)
    registry.promote("v1")
    pointer = json.loads((registry.root / "production.json").read_text())
    assert pointer["version"] == "v1" and Path(pointer["path"]) == registry.path("v1")
    registry.promote("v2")
    assert registry.production() == "v2"
    entry = registry.rollback()
    assert entry["version"] == "v1" and entry["previous"] == "v2" and registry.production() == "v1"
    registry.rollback(to="v1-epoch1")
    assert registry.production() == "v1-epoch1"
    moves = [(h["action"], h["version"], h["previous"]) for h in registry.history() if h["action"] != "register"]
    assert moves == [("promote", "v1", None), ("promote", "v2", "v1"), ("rollback", "v1", "v2"),
                     ("rollback", "v1-epoch1", "v1")]


def test_rollback_without_history_is_an_error(registry):
    with pytest.raises(NotFound, match="no previous production"):
        registry.rollback()
    with pytest.raises(NotFound, match="'v9' is not in .*known: v1-epoch1, v1-epoch2, v1"):
        registry.promote("v9")


def test_crash_between_pointer_temp_write_and_rename_leaves_production(registry, monkeypatch):
    registry.promote("v1")
    real_replace = os.replace
    seen = []

    def crash(src, dst):
        if Path(dst).name == "production.json":
            seen.append(Path(src).read_text())  # the new pointer was fully written to its temp file
            raise OSError("simulated crash before rename")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        registry.promote("v1-epoch2")
    monkeypatch.undo()
    assert json.loads(seen[0])["version"] == "v1-epoch2"
    assert registry.production() == "v1"
    assert not list(registry.root.glob(".production.json.*"))
    assert [h["version"] for h in registry.history() if h["action"] == "promote"] == ["v1"]


def test_corrupt_stored_file_fails_promote_and_keeps_production(registry):
    registry.promote("v1")
    before = registry.history()
    target = registry.path("v1-epoch1") / "adapter_model.safetensors"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="v1-epoch1: file adapter_model.safetensors: sha256"):
        registry.promote("v1-epoch1")
    with pytest.raises(ReleaseError, match="v1-epoch1: file adapter_model.safetensors"):
        registry.rollback(to="v1-epoch1")
    assert registry.production() == "v1"
    assert registry.history() == before


def test_cli_register_promote_rollback_history(tmp_path, trained_adapter_dir, capsys):
    from nyxmed.cli import main

    reg = str(tmp_path / "reg")
    assert main(["releases", "--registry", reg, "register", str(trained_adapter_dir), "--version", "v3"]) == 0
    capsys.readouterr()
    assert main(["releases", "--registry", reg, "promote", "v3"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v3"
    assert main(["releases", "--registry", reg, "rollback", "--to", "v3-epoch1"]) == 0
    capsys.readouterr()
    assert main(["releases", "--registry", reg, "list"]) == 0
    listing = capsys.readouterr().out
    assert "v3-epoch1" in listing and "production" in listing
    assert main(["releases", "--registry", reg, "history"]) == 0
    actions = [json.loads(line)["action"] for line in capsys.readouterr().out.splitlines()]
    assert actions == ["register", "register", "register", "promote", "rollback"]
    assert LocalRegistry(reg).production() == "v3-epoch1"
    assert main(["releases", "--registry", reg, "promote", "v9"]) == 4  # NotFound (docs/exit-codes.md)
    assert "nyxmed releases promote: version 'v9' is not in" in capsys.readouterr().err


# ---------------------------------------------------------------------- concurrency: processes, not threads
def move_in_process(make_registry, job, barrier, errors) -> None:
    """One release manager: wait for the others, then promote ``job`` or roll back (in a child process)."""
    reg = make_registry()
    barrier.wait()
    try:
        reg.rollback() if job == "rollback" else reg.promote(job)
    except Exception as exc:  # reported to the parent, which fails the test with it
        errors.put(f"{job}: {type(exc).__name__}: {exc}")
        errors.close()
        errors.join_thread()  # flushed before the exit code says so (Queue.empty() alone can miss it)
        raise SystemExit(1)


def promote_concurrently(make_registry, versions, rounds, rollbacks=2) -> None:
    """``rounds`` times, every version of ``versions`` promoted at once, each by its own process; from the
    second round on, ``rollbacks`` more processes roll back at the same time."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for r in range(rounds):
        jobs = versions + ["rollback"] * (rollbacks if r else 0)
        barrier = ctx.Barrier(len(jobs))
        procs = [ctx.Process(target=move_in_process, args=(make_registry, job, barrier, errors)) for job in jobs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
        codes = [p.exitcode for p in procs]
        if codes != [0] * len(procs):  # a failed move exits 1 after its error is flushed
            raise AssertionError((codes, [errors.get(timeout=10) for c in codes if c == 1]))
        assert errors.empty()


def assert_valid_chain(reg, n_moves) -> None:
    """Each move's ``previous`` is the production before it; rollback returns to the one before the last."""
    moves = [h for h in reg.history() if h["action"] in ("promote", "rollback")]
    assert len(moves) == n_moves, [(m["action"], m["version"], m["previous"]) for m in moves]
    before = None
    for m in moves:
        assert m["previous"] == before, moves
        before = m["version"]
    assert reg.production() == before
    entry = reg.rollback()
    assert entry["version"] == moves[-1]["previous"] and entry["previous"] == before
    assert reg.production() == moves[-1]["previous"]


def test_concurrent_promotes_in_processes_keep_a_valid_history(registry, tmp_path, trained_adapter_dir):
    _register_v2(registry, tmp_path, trained_adapter_dir)
    publish(trained_adapter_dir, "v3", registry, tmp_path / "stage3")
    versions = ["v1", "v1-epoch1", "v1-epoch2", "v2", "v3", "v3-epoch1"]
    promote_concurrently(lambda: LocalRegistry(registry.root), versions, rounds=3)
    assert_valid_chain(registry, 3 * len(versions) + 2 * 2)
    pointer = json.loads((registry.root / "production.json").read_text())
    assert Path(pointer["path"]) == registry.path(registry.production())


# ---------------------------------------------------------------------- damaged registry files
def _commands(reg):
    """What list, promote, history and rollback call (the CLI is a thin layer over these)."""
    return {"list": lambda: (reg.versions(), reg.production()), "promote": lambda: reg.promote("v1-epoch1"),
            "history": reg.history, "rollback": reg.rollback}


@pytest.fixture()
def promoted(registry, tmp_path, trained_adapter_dir):
    _register_v2(registry, tmp_path, trained_adapter_dir)
    registry.promote("v1")
    registry.promote("v2")
    return registry


def _damage(path: Path, keep: int) -> bytes:
    """Cut ``path`` to its first ``keep`` bytes (negative: drop that many), as a crash mid-write would."""
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:keep])
    return path.read_bytes()


@pytest.mark.parametrize("command", ["list", "promote", "rollback"])
def test_half_written_production_json_is_named_and_never_reset(promoted, command):
    pointer = promoted.root / "production.json"
    damaged = _damage(pointer, 20)
    history = promoted.history()
    with pytest.raises(InputError, match=r"production\.json is damaged .*not reset.*history\.jsonl"):
        _commands(promoted)[command]()
    assert pointer.read_bytes() == damaged  # never silently reset
    assert promoted.history() == history  # history works and got no entry
    pointer.unlink()  # the documented recovery: remove it and promote the version the history names
    assert history[-1]["version"] == "v2"
    promoted.promote("v2")
    assert promoted.production() == "v2"


@pytest.mark.parametrize("command", ["list", "promote", "history", "rollback"])
def test_torn_last_line_of_history_is_named(promoted, command):
    log = promoted.root / "history.jsonl"
    damaged = _damage(log, -7)
    with pytest.raises(InputError, match=r"history\.jsonl line 6 is damaged .*last line is an append that was cut off"):
        _commands(promoted)[command]()
    assert log.read_bytes() == damaged and promoted.production() == "v2"


def test_history_append_refuses_to_glue_onto_a_torn_line(promoted, tmp_path, trained_adapter_dir):
    log = promoted.root / "history.jsonl"
    damaged = _damage(log, -7)
    with pytest.raises(InputError, match="history.jsonl line 6 is damaged"):
        publish(trained_adapter_dir, "v4", promoted, tmp_path / "stage4")
    assert log.read_bytes() == damaged
    log.write_bytes(b"".join(line + b"\n" for line in damaged.splitlines()[:-1]))  # the documented recovery
    # the torn line was promote v2, whose pointer was already written: history and production disagree until
    # the interrupted command is re-run, which records it again
    assert promoted.history()[-1]["version"] == "v1" and promoted.production() == "v2"
    publish(trained_adapter_dir, "v4", promoted, tmp_path / "stage4")
    assert promoted.history()[-1]["version"] == "v4"


@pytest.mark.parametrize("command", ["list", "promote", "rollback"])
def test_truncated_release_json_is_named(promoted, command):
    target = "v1-epoch1" if command == "promote" else "v1"  # rollback from v2 goes to v1
    release = promoted.root / "versions" / target / "release.json"
    _damage(release, 50)
    with pytest.raises(InputError, match=rf"versions/{target}/release\.json is damaged .*staging folder"):
        _commands(promoted)[command]()
    assert promoted.production() == "v2"


def test_cli_damaged_file_is_one_line_not_a_traceback(promoted, capsys):
    from nyxmed.cli import main

    _damage(promoted.root / "production.json", 20)
    for cmd in (["list"], ["promote", "v1"], ["rollback"]):
        assert main(["releases", "--registry", str(promoted.root), *cmd]) != 0
        err = capsys.readouterr().err
        assert "production.json is damaged" in err and "Traceback" not in err and len(err.splitlines()) == 1
