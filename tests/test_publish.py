"""Publish to the Hub (a local stand-in server), the model card, secrets and record text kept out,
and the Hub registry's promote / rollback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub_standin import HubStandin
from nyxmed.errors import InputError, RemoteError
from nyxmed.releases import ReleaseError
from nyxmed.releases.staging import STAGING_MARKER

TOKEN = "hf_FakeTokenForTests0123456789abcdef"
PLANT = "Zebra-striped hepatic lesion in patient Quintessa Marlowe"  # stands for report text
PASSWORD = "S3cretPgPassw0rd"
REPO = "nyxorg/nyx-coder"


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    with HubStandin() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # conftest sets HF_HUB_OFFLINE=1
        yield server


@pytest.fixture()
def release_inputs(tmp_path, trained_adapter_dir):
    """A trained adapter plus evaluation and data files, with record text planted all around them."""
    src = Path(shutil.copytree(trained_adapter_dir, tmp_path / "train"))
    (src / "samples.jsonl").write_text(json.dumps({"id": "r1", "report_text": PLANT}) + "\n")
    (src / "checkpoint-10").mkdir()
    (src / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"last_batch_text": PLANT}))
    tm = json.loads((src / "training_metrics.json").read_text())
    tm["log_history"] = [{"step": 10, "eval_loss": 1.9, "sample_prediction": PLANT}]
    (src / "training_metrics.json").write_text(json.dumps(tm))
    cfg = yaml.safe_load((src / "config.yaml").read_text())
    cfg["data"] = {"sources": [f"postgresql://coder:{PASSWORD}@db.internal/radiology"], "hard_ids": ["acc-1", "acc-2"]}
    (src / "config.yaml").write_text(yaml.safe_dump(cfg))
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "predictions.jsonl").write_text(json.dumps({"id": "r1", "report_text": PLANT, "prediction": "74177"}) + "\n")
    (ev / "metrics.json").write_text(json.dumps({
        "n": 200, "cpt_exact": 0.91, "icd_root_overlap": 0.84, "all_three_exact": 0.62,
        "ci95": {"cpt_exact": [0.87, 0.95], "icd_root_overlap": [0.79, 0.88]},
        "bootstrap": {"resamples": 1000, "seed": 17},
        "breakdowns": {"modality": {PLANT: {"n": 1}}}, "examples": [{"report_text": PLANT}]}))
    (ev / "comparison.json").write_text(json.dumps({
        "a": "/eval/v0", "b": "/eval/v1", "n": 200, "bootstrap": {"resamples": 1000},
        "metrics": {"cpt_exact": {"a": 0.88, "b": 0.91, "diff": 0.03, "diff_ci95": [0.01, 0.05],
                                  "mcnemar": {"a_only": 2, "b_only": 8, "p_value": 0.109}}},
        "worst_cases": [{"id": "r1", "report_text": PLANT}]}))
    data = tmp_path / "data"
    data.mkdir()
    (data / "records.jsonl").write_text(json.dumps({"report_text": PLANT}) + "\n")
    (data / "manifest.json").write_text(json.dumps({
        "name": "v1", "sources": [PLANT], "duplicates": {"r9": PLANT},
        "counts": {"input": 1000, "after_dedup": 950, "too_long_dropped": 3,
                   "duplicates_removed": {"exact": 40, "near": 10},
                   "by_role_split": {"new": {"train": 600, "validation": 50, "heldout": 150},
                                     "specificity": {"train": 100, "validation": 0, "heldout": 47}}},
        "weights": {"specificity": 3.0, "other": 1.0}}))
    return src, ev, data


def _publish_args(src, ev, data, stage, *extra):
    return ["publish", str(src), "--repo", REPO, "--version", "v1", "--metrics", str(ev / "metrics.json"),
            "--compare", str(ev / "comparison.json"), "--previous", "v0",
            "--dataset-manifest", str(data / "manifest.json"), "--out", str(stage), *extra]


def test_publish_uploads_tags_and_card_without_record_text_or_secrets(hub, release_inputs, tmp_path, capsys,
                                                                        caplog):
    from nyxmed.cli import main

    src, ev, data = release_inputs
    caplog.set_level(logging.DEBUG)
    assert main(_publish_args(src, ev, data, tmp_path / "stage")) == 0
    repo = hub.repos[REPO]
    assert set(repo.tags) == {"v1", "v1-epoch1", "v1-epoch2"}
    v1 = hub.files(REPO, "v1")
    staged = tmp_path / "stage" / "v1"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md", "release.json"):
        assert v1[name] == (staged / name).read_bytes(), name
    assert "samples.jsonl" not in v1 and not any(k.startswith("frozen/") for k in v1)
    assert hub.files(REPO, "v1-epoch1")["adapter_model.safetensors"] == \
        (src / "frozen/epoch-1/adapter_model.safetensors").read_bytes()

    card = v1["README.md"].decode()
    assert "library_name: peft" in card and "license: other" in card
    assert "| `cpt_exact` | 0.9100 | [0.8700, 0.9500] |" in card
    assert "| `cpt_exact` | 0.8800 | 0.9100 | 0.0300 | [0.0100, 0.0500] | 0.1090 |" in card
    assert "| 10 | 1.9000 |" in card and "early_stopping" in card  # eval-loss curve, stop reason
    assert "| specificity | 100 | 0 | 47 |" in card
    release = json.loads(v1["release.json"])
    assert release["files"]["README.md"]["git_oid"]

    # nothing from the records and no secret left the machine, in any commit of the repo
    for files in repo.commits.values():
        for name, content in files.items():
            assert PLANT.encode() not in content, name
            assert PASSWORD.encode() not in content, name
            assert TOKEN.encode() not in content, name
    uploaded_cfg = yaml.safe_load(v1["config.yaml"])
    assert uploaded_cfg["data"]["hard_ids"] == [] and uploaded_cfg["data"]["hard_ids_count"] == 2

    # the token was used, and never shown
    assert hub.tokens == {TOKEN}
    out = capsys.readouterr()
    for text in (out.out, out.err, caplog.text):
        assert TOKEN not in text
    printed = json.loads(out.out)
    assert [p["action"] for p in printed] == [f"registered {v} in hub:{REPO}" for v in ("v1-epoch1", "v1-epoch2", "v1")]
    assert printed[-1]["skipped"] == ["checkpoint-10/", "samples.jsonl"]


def test_dry_run_writes_the_folder_and_touches_nothing(hub, release_inputs, tmp_path, capsys):
    from nyxmed.cli import main

    src, ev, data = release_inputs
    assert main(_publish_args(src, ev, data, tmp_path / "dry", "--dry-run")) == 0
    assert hub.requests == []
    plan = json.loads(capsys.readouterr().out)
    assert plan[-1]["action"] == f"would register v1 in hub:{REPO}"
    folder = tmp_path / "dry" / "v1"
    assert (folder / "README.md").is_file() and (folder / "release.json").is_file()
    assert (folder / STAGING_MARKER).is_file()  # the staging folder says nyxmed wrote it
    assert sorted(plan[-1]["files"]) == sorted(p.name for p in folder.iterdir()
                                               if p.name not in ("release.json", STAGING_MARKER))


def test_publish_without_token_fails(hub, release_inputs, tmp_path, monkeypatch):
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import publish

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login either
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    src, _, _ = release_inputs
    with pytest.raises(RemoteError, match="401") as exc:
        publish(src, "v1", HubRegistry(REPO), tmp_path / "stage", REPO)
    assert exc.value.exit_code == RemoteError.exit_code and "\n" not in str(exc.value)
    assert REPO not in hub.repos


def test_offline_or_unreachable_hub_is_a_remote_error(monkeypatch):
    import socket

    import huggingface_hub.constants as hf_constants

    from nyxmed.releases.hub import HubRegistry

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    for call in ("versions", "production", "history"):
        with pytest.raises(RemoteError, match="HF_HUB_OFFLINE is set"):
            getattr(HubRegistry(REPO, endpoint="http://127.0.0.1:9"), call)()
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RemoteError, match=f"cannot reach {closed}"):
        HubRegistry(REPO, endpoint=closed).promote("v1")


def test_stand_in_refuses_a_stale_parent_commit_as_the_hub_does(hub):
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO, private=True)
    stale = api.list_repo_refs(REPO).branches[0].target_commit
    api.create_commit(REPO, [CommitOperationAdd("a.txt", b"a")], commit_message="a", parent_commit=stale)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit(REPO, [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=stale)
    assert exc.value.response.status_code == 412
    assert "b.txt" not in hub.files(REPO, "main")


def test_concurrent_hub_promotes_in_processes_keep_a_valid_history(hub, release_inputs, tmp_path):
    from test_releases import assert_valid_chain, promote_concurrently

    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import publish

    src, _, _ = release_inputs
    publish(src, "v1", HubRegistry(REPO), tmp_path / "stage1", REPO)
    publish(src, "v2", HubRegistry(REPO), tmp_path / "stage2", REPO)
    versions = ["v1", "v1-epoch1", "v1-epoch2", "v2", "v2-epoch1", "v2-epoch2"]
    promote_concurrently(lambda: HubRegistry(REPO), versions, rounds=2)
    reg = HubRegistry(REPO)
    assert_valid_chain(reg, 2 * len(versions) + 2)
    repo = hub.repos[REPO]
    assert repo.branches["production"] == repo.tags[reg.production()]  # the branch follows the pointer


def test_damaged_hub_pointer_is_named_and_kept(hub, release_inputs, tmp_path):
    from nyxmed.releases.hub import POINTER_PATH, HubRegistry
    from nyxmed.releases.publish import publish

    src, _, _ = release_inputs
    shutil.rmtree(src / "frozen")
    publish(src, "v1", HubRegistry(REPO), tmp_path / "stage", REPO)
    reg = HubRegistry(REPO)
    reg.promote("v1")
    repo = hub.repos[REPO]
    head = repo.branches["main"]
    repo.commits[head][POINTER_PATH] = repo.commits[head][POINTER_PATH][:15]
    for call in (reg.production, lambda: reg.promote("v1"), reg.rollback):
        with pytest.raises(InputError, match=f"{REPO}:{POINTER_PATH} is damaged .*not reset"):
            call()
    assert repo.branches["main"] == head  # nothing was committed over it


def test_hub_promote_rollback_and_failures(hub, release_inputs, tmp_path):
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import publish

    src, _, _ = release_inputs
    publish(src, "v1", HubRegistry(REPO), tmp_path / "stage", REPO)
    reg = HubRegistry(REPO)
    repo = hub.repos[REPO]
    assert [v["version"] for v in reg.versions()] == ["v1-epoch1", "v1-epoch2", "v1"]
    reg.promote("v1")
    assert repo.branches["production"] == repo.tags["v1"] and reg.production() == "v1"
    reg.promote("v1-epoch2")
    assert reg.rollback()["version"] == "v1" and repo.branches["production"] == repo.tags["v1"]
    reg.rollback(to="v1-epoch1")
    assert repo.branches["production"] == repo.tags["v1-epoch1"]

    # a branch re-create that fails puts production back where it was
    hub.fail_next[rf"POST /api/models/{REPO}/branch/production"] = 500
    with pytest.raises(RemoteError, match="500"):
        reg.promote("v1")
    assert repo.branches["production"] == repo.tags["v1-epoch1"]

    # a file changed on the Hub behind the release's back: checksum verification refuses it
    repo.commits[repo.tags["v1-epoch2"]]["adapter_model.safetensors"] += b"\0"
    with pytest.raises(ReleaseError, match="v1-epoch2: file adapter_model.safetensors: Hub checksum"):
        reg.promote("v1-epoch2")
    assert reg.production() == "v1-epoch1"
    moves = [(h["action"], h["version"]) for h in reg.history() if h["action"] != "register"]
    assert moves == [("promote", "v1"), ("promote", "v1-epoch2"), ("rollback", "v1"), ("rollback", "v1-epoch1")]


@pytest.mark.slow
def test_cli_subprocess_reads_hf_endpoint(hub, release_inputs, tmp_path):
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import publish

    src, _, _ = release_inputs
    shutil.rmtree(src / "frozen")
    publish(src, "v1", HubRegistry(REPO), tmp_path / "stage", REPO)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    run = subprocess.run([sys.executable, "-m", "nyxmed", "releases", "--repo", REPO, "promote", "v1"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["version"] == "v1" and TOKEN not in run.stdout + run.stderr
    assert hub.repos[REPO].branches["production"] == hub.repos[REPO].tags["v1"]


def test_dry_run_of_a_merged_model(tmp_path, tiny_base_dir, tiny_adapter_dir):
    from nyxmed.merge import merge_adapter
    from nyxmed.releases.publish import publish

    merged = tmp_path / "merged"
    merge_adapter(str(tiny_base_dir), tiny_adapter_dir, merged, dtype="float32", max_shard_size="100KB",
                  max_new_tokens=2)
    (staged,) = publish(merged, "v1-merged", None, tmp_path / "stage", REPO)
    assert staged.kind == "merged" and staged.skipped == []
    names = set(staged.release["files"])
    assert {"merge_manifest.json", "model.safetensors.index.json", "config.json", "README.md"} <= names
    assert len([n for n in names if n.startswith("model-")]) >= 3
    assert "library_name: transformers" in (staged.folder / "README.md").read_text()
    assert staged.release["merge"]["verification_ok"] is True


def test_staging_never_deletes_what_it_did_not_create(tmp_path, trained_adapter_dir, capsys):
    from nyxmed.cli import main
    from nyxmed.errors import OutputConflict
    from nyxmed.releases.publish import publish

    train = tmp_path / "train"
    adapter = Path(shutil.copytree(trained_adapter_dir, train / "v1"))
    before = {p.relative_to(adapter): p.read_bytes() for p in adapter.rglob("*") if p.is_file()}
    # the command: --out train stages v1 into train/v1, the adapter itself
    assert main(["publish", str(adapter), "--repo", REPO, "--version", "v1", "--out", str(train), "--dry-run"]) != 0
    assert "overlaps" in capsys.readouterr().err
    for workdir, version in ((train, "v1"), (adapter, "v1"), (tmp_path, "train")):  # equal, inside, holding
        with pytest.raises(OutputConflict, match="overlaps"):
            publish(adapter, version, None, workdir)
    assert not list(tmp_path.glob("train-epoch*"))  # refused before any version was staged
    assert {p.relative_to(adapter): p.read_bytes() for p in adapter.rglob("*") if p.is_file()} == before

    mine = tmp_path / "work" / "v1"  # a folder that happens to sit where the staging folder would go
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputConflict, match=f"{mine} exists, is not empty and was not written by nyxmed"):
        publish(adapter, "v1", None, tmp_path / "work")
    assert (mine / "notes.txt").read_text() == "keep me"

    (staged,) = publish(adapter, "v1-final", None, tmp_path / "work")[-1:]  # a marked folder is replaced
    (staged.folder / "stale.txt").write_text("from an earlier stage")
    (again,) = publish(adapter, "v1-final", None, tmp_path / "work")[-1:]
    assert again.folder == staged.folder and not (again.folder / "stale.txt").exists()
    assert (again.folder / STAGING_MARKER).is_file() and STAGING_MARKER not in again.release["files"]
    # one marker for every folder nyxmed replaces; a staging folder of an earlier release (.nyxmed-staging)
    # is still nyxmed's, and an empty folder holds nothing to lose
    from nyxmed.io import OWNED_MARKER

    assert STAGING_MARKER == OWNED_MARKER
    for name in (".nyxmed-staging", None):
        (again.folder / STAGING_MARKER).unlink()
        if name:
            (again.folder / name).write_text("earlier nyxmed")
        else:
            for f in sorted(again.folder.rglob("*"), reverse=True):
                f.rmdir() if f.is_dir() else f.unlink()
        (replaced,) = publish(adapter, "v1-final", None, tmp_path / "work")[-1:]
        assert (replaced.folder / STAGING_MARKER).is_file() and (replaced.folder / "release.json").is_file()


def test_card_model_index_carries_a_real_evaluation(tmp_path):
    from huggingface_hub import ModelCard

    from nyxmed import evaluation as E
    from nyxmed.config import EvalConfig
    from nyxmed.releases.card import build_card
    from nyxmed.sources import write_cases
    from nyxmed.synth import generate_cases

    cases = generate_cases(12, seed=5)
    gold = write_cases(cases, tmp_path / "gold.jsonl")
    bench = E.create_benchmark(gold, tmp_path / "bench.json", n=10, seed=1)
    preds = tmp_path / "preds.jsonl"  # right for half the records, one code short for the others
    preds.write_text("".join(json.dumps({"id": c.id, "output": c.codes.render() if i % 2 else
                                         c.codes.render().rsplit(",", 1)[0]}) + "\n" for i, c in enumerate(cases)))
    metrics = E.run(EvalConfig(predictions=str(preds), gold=str(gold), benchmark=str(tmp_path / "bench.json"),
                               out_dir=str(tmp_path / "eval"), bootstrap=20))

    text = build_card(repo_id=REPO, version="v3", kind="adapter", base_model=None, license="other",
                      metrics_path=tmp_path / "eval" / "metrics.json")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["model-index"][0]["name"] == REPO
    results = ModelCard(text).data.eval_results  # parsed back by huggingface_hub from the YAML front matter
    by_metric = {r.metric_type: r for r in results}
    for name in ("all_three_exact", "cpt_exact", "icd_exact", "icd_root_overlap", "invalid_code_rate",
                 "parse_failure_rate", "icd_micro_f1"):
        assert by_metric[name].metric_value == pytest.approx(metrics[name]), name
    assert 0 < metrics["cpt_exact"] and metrics["icd_exact"] < 1  # the numbers checked are not all one value
    assert "n" not in by_metric and "ci95" not in by_metric
    assert {(r.task_type, r.dataset_type, r.dataset_split, r.dataset_revision) for r in results} == {
        ("text-generation", f"nyxmed-benchmark-{bench['name']}", "heldout", bench["manifest_hash"])}
    # no evaluation, no model-index
    bare = build_card(repo_id=REPO, version="v3", kind="adapter", base_model=None, license="other")
    assert "model-index" not in bare and "model_name" not in bare and ModelCard(bare).data.eval_results is None
