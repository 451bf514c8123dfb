"""The dataset builder: composition, weights, splits, leakage, labels, truncation, manifest, CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from nyxmed import prompts
from nyxmed.cases import Case
from nyxmed.composition import group_key, is_specificity_pair, split_by_group
from nyxmed.config import Recipe
from nyxmed.dataset import build_dataset, composition_table, encode_record
from nyxmed.synth import generate_cases

SPLITS = ("train", "validation", "heldout")


def _recipe(out_dir, **data) -> Recipe:
    r = Recipe(name="test")
    r.data.out_dir = str(out_dir)
    r.data.heldout_size = 40
    r.data.val_size = 10
    r.retrieval.dense = False
    r.retrieval.n_shots = 2
    r.prompt.max_length = 4096
    for k, v in data.items():
        setattr(r.data, k, v)
    return r


def _with_duplicates(cases: list[Case]) -> list[Case]:
    """Three exact copies and two near copies (one word changed) under new ids and patients."""
    extra = [dataclasses.replace(cases[i], id=f"exact-{i}", patient_key=f"PX{i}", accession=None) for i in range(3)]
    for i in (3, 4):
        c = cases[i]
        extra.append(dataclasses.replace(c, id=f"near-{i}", patient_key=f"PN{i}", accession=None,
                                         report_text=c.report_text + " No change."))
    return cases + extra


@pytest.fixture(scope="module")
def synth_cases():
    return generate_cases(200, 5)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_tokenizer, synth_cases):
    cases = _with_duplicates(synth_cases)
    return build_dataset(_recipe(tmp_path_factory.mktemp("data")), tiny_tokenizer, cases, progress=False), cases


def _examples(user: str) -> list[str]:
    """The few-shot report blocks of a user message (without their code lines)."""
    section = user.split("## CPT candidates")[0]
    blocks = re.split(r"### Example \d+\n", section)[1:]
    return [b.rsplit("\nCodes: ", 1)[0] for b in blocks]


def test_splits_are_group_disjoint_and_deterministic(built, synth_cases):
    result, _ = built
    ds = result.dataset
    patients = {s: set() for s in SPLITS}
    hashes = {s: set(ds[s]["content_hash"]) for s in SPLITS}
    by_id = {c.id: c for c in _with_duplicates(synth_cases)}
    for s in SPLITS:
        patients[s] = {group_key(by_id[i]) for i in ds[s]["id"]}
    assert not patients["train"] & (patients["validation"] | patients["heldout"])
    assert not patients["validation"] & patients["heldout"]
    assert not hashes["train"] & (hashes["validation"] | hashes["heldout"])
    # whole patient groups only: as close to the target as group sizes allow, never above it
    assert 8 <= len(ds["validation"]) <= 10 and len(ds["validation"]) + len(ds["heldout"]) == 40
    a = split_by_group(synth_cases, 17, 40, 10)
    b = split_by_group(list(reversed(synth_cases)), 17, 40, 10)
    assert {synth_cases[i].id for i in a["heldout"]} == {synth_cases[::-1][i].id for i in b["heldout"]}
    c = split_by_group(synth_cases, 18, 40, 10)
    assert {synth_cases[i].id for i in a["heldout"]} != {synth_cases[i].id for i in c["heldout"]}


def test_labels_cover_exactly_the_answer_tokens(built, tiny_tokenizer):
    ds = built[0].dataset
    eot = tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")
    for split in SPLITS:
        for row in ds[split].select(range(min(15, len(ds[split])))):
            ids, labels = row["input_ids"], row["labels"]
            prompt = tiny_tokenizer(prompts.render_prompt(tiny_tokenizer, row["system"], row["user"]),
                                    add_special_tokens=False)["input_ids"]
            answer = tiny_tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [eot]
            assert ids == prompt + answer  # the evaluator's prompt path gives the same prefix
            assert labels == [-100] * len(prompt) + answer
            assert row["attention_mask"] == [1] * len(ids)
            assert row["answer"] == ", ".join([" ".join(row["cpt"]), " ".join(row["modifiers"]), *row["icd"]])


def test_specificity_pairs_weigh_three_times_in_the_loss(built, tiny_tokenizer):
    import torch

    from nyxmed.training.loss import weighted_lm_loss
    from nyxmed.training.packing import PackingCollator
    from nyxmed.tiny import build_tiny_model

    result, cases = built
    by_id = {c.id: c for c in cases}
    spec = 0
    for split in SPLITS:
        for rid, role, weight in zip(*(result.dataset[split][k] for k in ("id", "role", "weight"))):
            assert (role == "specificity") == is_specificity_pair(by_id[rid])
            assert weight == (3.0 if role == "specificity" else 1.0)
            spec += role == "specificity"
    assert spec > 0
    # the trainer's loss really multiplies this example's token losses by its weight
    row = next(r for r in result.dataset["train"] if r["role"] == "specificity")
    collate = PackingCollator(pad_token_id=tiny_tokenizer.pad_token_id)
    model = build_tiny_model(tiny_tokenizer, seed=0).eval()
    losses = []
    for weight in (row["weight"], 1.0):
        batch = collate([{**row, "weight": weight}])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        losses.append(weighted_lm_loss(logits, batch["labels"], batch["token_weights"]))
    (weighted, w_sum), (plain, n_tokens) = losses
    assert torch.allclose(weighted, 3 * plain) and torch.allclose(w_sum, 3 * n_tokens)
    assert int(n_tokens) == sum(l != -100 for l in row["labels"]) - 0  # every answer token counts


def test_manifest_counts_reconcile(built):
    result, cases = built
    m = json.loads((result.out_dir / "manifest.json").read_text())
    c = m["counts"]
    assert c["input"] == len(cases)
    assert c["duplicates_removed"]["exact"] == 3 and c["duplicates_removed"]["near"] >= 2
    assert {"exact-0", "exact-1", "exact-2", "near-3", "near-4"} <= set(m["duplicates"])
    assert c["after_dedup"] == c["input"] - c["duplicate_ids_removed"] - sum(c["duplicates_removed"].values())
    assert sum(c["by_split"].values()) == c["after_dedup"] - c["too_long_dropped"]
    assert sum(c["by_role"].values()) == sum(c["by_split"].values())
    for s in SPLITS:
        assert c["by_split"][s] == len(result.dataset[s]) == sum(c["by_role_split"][r][s] for r in c["by_role"])
        assert m["weights"]["sum_by_split"][s] == pytest.approx(sum(result.dataset[s]["weight"]))
        assert m["token_lengths"][s]["max"] <= m["config"]["prompt"]["max_length"]
    records = [json.loads(x) for x in (result.out_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == sum(c["by_split"].values())
    assert set(m["blocked_retrievals"]) >= {"content_hash", "near_duplicate", "metadata"}
    assert m["sources"][0]["accepted"] == len(cases)
    for s in SPLITS:
        lines = (result.out_dir / "cases" / f"{s}.jsonl").read_text().splitlines()
        assert [json.loads(x)["id"] for x in lines] == result.dataset[s]["id"]
    table = composition_table(m)
    assert table.row_count == 6  # five roles (reviewed, specificity, primary, hard, retained) and the total


def test_heldout_few_shots_come_from_train_and_never_from_self(built):
    ds = built[0].dataset
    train_bodies = {}
    for rid, user in zip(ds["train"]["id"], ds["train"]["user"]):
        train_bodies[rid] = user.split("## Report to code\n", 1)[1]
    train_texts = list(train_bodies.values())
    for split in SPLITS:
        for rid, user in zip(ds[split]["id"], ds[split]["user"]):
            own = user.split("## Report to code\n", 1)[1]
            for block in _examples(user):
                assert block != own
                body = block.split("Reason for Exam: ", 1)[-1].split("\n", 1)[-1] if block.startswith("Exam") else block
                assert any(body in t for t in train_texts), f"{split} record {rid}: example not from train"


def test_twins_are_never_retrieved(tmp_path, tiny_tokenizer, synth_cases):
    """Exact copies, near copies, same-patient-same-date and same-accession twins (dedup off)."""
    base = synth_cases[:120]
    twins, pairs = [], []
    for k, c in enumerate(base[:6]):
        donor = base[60 + k]
        kinds = {
            "exact": dataclasses.replace(c, id=f"{c.id}-exact"),  # a re-export: same visit, same accession
            "near": dataclasses.replace(c, id=f"{c.id}-near", accession=None, report_text=c.report_text + " Stable."),
            "visit": dataclasses.replace(donor, id=f"{c.id}-visit", patient_key=c.patient_key, exam_date=c.exam_date,
                                         accession=None, report_text=donor.report_text + f" Addendum {k}."),
            "accession": dataclasses.replace(donor, id=f"{c.id}-acc", patient_key=c.patient_key, accession=c.accession,
                                             exam_date="1999-01-01", report_text=donor.report_text + f" Note {k}."),
        }
        twins += kinds.values()
        pairs += [(c.id, t.id) for t in kinds.values()]
    cases = base + twins
    r = _recipe(tmp_path, dedup=False, heldout_size=30, val_size=5)
    r.retrieval.n_shots = 3
    result = build_dataset(r, tiny_tokenizer, cases, progress=False)
    by_id = {c.id: c for c in cases}
    users = {rid: u for s in SPLITS for rid, u in zip(result.dataset[s]["id"], result.dataset[s]["user"])}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            for block in _examples(users[x]):
                assert not block.endswith(by_id[y].report_text), f"{x} retrieved its twin {y}"
    blocked = result.manifest["blocked_retrievals"]
    assert blocked["content_hash"] > 0 and blocked["near_duplicate"] > 0 and blocked["metadata"] > 0


def test_truncation_drops_shots_then_candidates_then_body_middle(tiny_tokenizer, synth_cases):
    c = synth_cases[0]
    body = " ".join(f"Sentence {i} describes the findings in detail." for i in range(120))
    shots = tuple(prompts.shot_for(x, 17, 1.0) for x in synth_cases[1:4])
    head = prompts.report_head(c, True)
    parts = prompts.PromptParts(shots, ("74177", "74176", "74178"), ("R10.84", "K57.30", "K57.32", "N20.0"),
                                prompts.load_rules(), head, body)
    answer = tiny_tokenizer(c.codes.render(), add_special_tokens=False)["input_ids"] + [
        tiny_tokenizer.convert_tokens_to_ids("<|eot_id|>")]
    bare = prompts.PromptParts((), ("74177",), ("R10.84",), parts.rules, head, "")
    floor = len(tiny_tokenizer(prompts.render_prompt(tiny_tokenizer, "S", prompts.build_user(bare)),
                               add_special_tokens=False)["input_ids"]) + len(answer)
    max_length = floor + 200
    enc = encode_record(tiny_tokenizer, "S", parts, answer, max_length, min_body_tokens=64)
    assert enc is not None and len(enc.input_ids) <= max_length
    assert enc.stages == ("shots", "candidates", "body")
    assert list(enc.input_ids[-len(answer):]) == answer and enc.prompt_len == len(enc.input_ids) - len(answer)
    report = enc.user.split("## Report to code\n", 1)[1]
    assert report.startswith(head + body[:200]) and prompts.CUT_MARK in report
    assert report.endswith(body[-20:])  # the tail of the body survives; only the middle goes
    assert enc.user.count("### Example") == 0 and "## CPT candidates (most likely first)\n74177\n\n" in enc.user
    assert encode_record(tiny_tokenizer, "S", parts, answer, floor + 20, min_body_tokens=64) is None


def test_truncation_counts_in_manifest(tmp_path, tiny_tokenizer, synth_cases):
    r = _recipe(tmp_path, heldout_size=10, val_size=2)
    r.prompt.max_length = 2300
    result = build_dataset(r, tiny_tokenizer, synth_cases[:60], progress=False)
    t = result.manifest["truncation"]
    assert t["shortened_records"] > 0 and t["by_shots"] > 0
    for s in SPLITS:
        for row in result.dataset[s]:
            assert len(row["input_ids"]) <= 2300
            n = sum(l != -100 for l in row["labels"])
            assert tiny_tokenizer.decode(row["input_ids"][-n:]) == row["answer"] + "<|eot_id|>"
    assert sum(result.manifest["counts"]["by_split"].values()) + len(t["too_long_ids"]) == 60
    r.prompt.max_length = 300  # not even the rules fit: a clear error, not an empty split
    with pytest.raises(ValueError, match="prompt.max_length=300"):
        build_dataset(r, tiny_tokenizer, synth_cases[:60], progress=False)


def test_retained_pool_excludes_previous_training(tmp_path, tiny_tokenizer, built, synth_cases):
    from nyxmed.sources import write_cases

    previous, _ = built
    trained = set(previous.dataset["train"]["id"])
    old_pool = [c for c in synth_cases if c.id in trained][:20]
    fresh = generate_cases(15, 99)
    write_cases(old_pool + fresh, tmp_path / "old_pool.jsonl")
    r = _recipe(tmp_path / "out", heldout_size=8, val_size=2, retained=[str(tmp_path / "old_pool.jsonl")],
                previous_manifest=str(previous.out_dir / "manifest.json"))
    result = build_dataset(r, tiny_tokenizer, synth_cases[150:200], progress=False)
    c = result.manifest["counts"]
    assert c["retained_filtered_by_previous_manifest"] == 20
    ids = {i for s in SPLITS for i in result.dataset[s]["id"]}
    assert not ids & {x.id for x in old_pool}
    retained = {i for s in SPLITS for i, role in zip(result.dataset[s]["id"], result.dataset[s]["role"])
                if role == "retained"}
    assert retained and retained <= {x.id for x in fresh}
    assert result.manifest["sources"][-1]["role"] == "previous_manifest"


def test_dense_build_uses_embedding_cosine(tmp_path, tiny_tokenizer, synth_cases):
    r = _recipe(tmp_path, heldout_size=8, val_size=2)
    r.retrieval.dense = True
    result = build_dataset(r, tiny_tokenizer, synth_cases[:40], progress=False)
    assert result.manifest["leakage_measure"] == "cosine" and result.manifest["leakage_threshold"] == 0.97
    assert result.manifest["seconds"]["embedding"] > 0
    assert all(len(_examples(u)) == 2 for u in result.dataset["train"]["user"])


@pytest.mark.slow
def test_cli_build_data(tmp_path, tiny_base_dir, capsys):
    from nyxmed.cli import main

    out = tmp_path / "data"
    rc = main(["build-data", "--config", "configs/tiny.yaml", "--no-progress", "data.synth_n=80",
               "data.heldout_size=16", "data.val_size=4", f"data.out_dir={out}", f"model.base_model={tiny_base_dir}"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"] + printed["validation"] + printed["heldout"] <= 80 and 2 <= printed["validation"] <= 4
    from datasets import DatasetDict

    assert set(DatasetDict.load_from_disk(str(out / "dataset"))) == set(SPLITS)
    assert main(["build-data", "--config", "configs/tiny.yaml", "data.nope=1"]) == 2
