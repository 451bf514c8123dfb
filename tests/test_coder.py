"""Coding new reports: the preprocessor's prompt, the generator's line, the parsed and checked codes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nyxmed.coder import Coder
from nyxmed.config import load_recipe
from nyxmed.dataset import build_dataset
from nyxmed.generation import Chat, Generation, TransformersGenerator
from nyxmed.preprocessor import Preprocessor
from nyxmed.sources import read_cases
from nyxmed.synth import generate_cases


class ScriptedGenerator:
    """A generator that answers each chat with a given line and records the chats it was sent."""

    def __init__(self, line: str):
        self.line, self.chats = line, []

    def generate(self, chats, progress=True):
        self.chats += list(chats)
        return [Generation(self.line, 3) for _ in chats]


@pytest.fixture(scope="module")
def preprocessor(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("coder")
    recipe = load_recipe(None, [f"data.out_dir={out}", "data.heldout_size=20", "data.val_size=10",
                                "retrieval.dense=false", "prompt.max_length=3900"])
    built = build_dataset(recipe, tiny_tokenizer, generate_cases(160, 5), progress=False)
    return Preprocessor.load(built.out_dir / "preprocessor", tiny_tokenizer)


@pytest.fixture(scope="module")
def new_reports():
    # another seed: none of these reports is in the pool
    return [dataclasses.replace(c, id=f"new-{i}") for i, c in enumerate(generate_cases(6, 99))]


def test_coder_sends_the_preprocessor_prompt_and_checks_the_codes(preprocessor, new_reports):
    gen = ScriptedGenerator("74177, 26, R10.84, Z99.999")
    coder = Coder(preprocessor, gen, version="v3", adapter_sha256="ab" * 32)
    coded, uncoded = coder.code(new_reports)
    assert not uncoded and [c.id for c in coded] == [r.id for r in new_reports]
    expected = preprocessor.prompts(new_reports)
    assert [(c.system, c.user) for c in gen.chats] == [(p.system, p.user) for p in expected]
    first = coded[0].to_dict()
    assert first["cpt"] == ["74177"] and first["modifiers"] == ["26"] and first["icd"] == ["R10.84", "Z99.999"]
    assert first["invalid_codes"] == ["Z99.999"]  # not in the ICD-10-CM release
    assert first["version"] == "v3" and first["preprocessor_id"] == preprocessor.id
    assert coder.describe() == {"version": "v3", "preprocessor_id": preprocessor.id, "adapter_sha256": "ab" * 32,
                                "constrained": None}


def test_coder_with_a_real_model_equals_direct_generation(preprocessor, new_reports, tiny_base_dir, tiny_adapter_dir):
    gen = TransformersGenerator.from_pretrained(str(tiny_base_dir), str(tiny_adapter_dir), "float32", "cpu",
                                                batch_size=3, max_new_tokens=12)
    coded, _ = Coder(preprocessor, gen).code(new_reports[:3])
    prompt = preprocessor.prompt(new_reports[1])
    direct = gen.generate([Chat(prompt.id, prompt.system, prompt.user)], progress=False)[0]
    assert coded[1].code_line == direct.text.strip()
    one = Coder(preprocessor, gen).code_text(new_reports[1].report_text, "new-1",
                                             exam_description=new_reports[1].exam_description,
                                             reason_for_exam=new_reports[1].reason_for_exam)
    assert one.code_line == coded[1].code_line


def test_reports_to_code_are_read_with_rejects_and_counts_reconcile(tmp_path):
    good = {"id": "r1", "report_text": "CT abdomen. Impression: appendicitis.", "cpt": ["74177"]}
    lines = [json.dumps(good),
             json.dumps({"id": "r2", "report_text": "   "}),
             json.dumps({"id": "r1", "report_text": "again"}),
             json.dumps({"id": "r3", "report_text": 5}),
             "{not json",
             json.dumps({"report_text": "no id"}),
             json.dumps({"id": "r4", "report_text": "MRI brain.", "icd": ["NOT-A-CODE"]})]  # gold ignored
    src = tmp_path / "reports.jsonl"
    src.write_text("\n".join(lines) + "\n")
    result = read_cases(src, reports_only=True, progress=False)
    assert [c.id for c in result.cases] == ["r1", "r4"] and all(c.codes.is_empty for c in result.cases)
    assert {(r.id, r.field) for r in result.rejects} == {("r2", "report_text"), ("r1", "id"), ("r3", "report_text"),
                                                         (None, "record"), (None, "id")}
    assert result.counts["read"] == len(result.cases) + len(result.rejects) == 7


def _built_preprocessor(out, tokenizer, cases, n_shots: int):
    recipe = load_recipe(None, [f"data.out_dir={out}", "data.heldout_size=20", "data.val_size=10",
                                "retrieval.dense=false", f"retrieval.n_shots={n_shots}", "prompt.max_length=3900"])
    build_dataset(recipe, tokenizer, cases, progress=False)
    return out / "preprocessor"


def test_rollback_codes_with_the_earlier_release_preprocessor(tmp_path, tiny_tokenizer, tiny_adapter_dir, new_reports):
    from nyxmed.coder import check_preprocessor, release_parts
    from nyxmed.errors import VerificationError
    from nyxmed.releases import LocalRegistry
    from nyxmed.releases.publish import publish

    cases = generate_cases(120, 6)
    pre_dirs = {v: _built_preprocessor(tmp_path / v, tiny_tokenizer, cases, n) for v, n in (("v1", 1), ("v2", 3))}
    registry = LocalRegistry(tmp_path / "registry")
    for v, pre_dir in pre_dirs.items():
        publish(tiny_adapter_dir, v, registry, tmp_path / "staging" / v, preprocessor=pre_dir)
        registry.promote(v)
    registry.rollback()
    parts = release_parts(registry)
    assert parts.version == "v1" and parts.preprocessor is not None
    loaded = Preprocessor.load(parts.preprocessor, tiny_tokenizer)
    v1, v2 = (Preprocessor.load(pre_dirs[v], tiny_tokenizer) for v in ("v1", "v2"))
    assert loaded.id == v1.id == parts.preprocessor_id != v2.id
    check_preprocessor(loaded, parts)
    with pytest.raises(VerificationError, match="is not release v1's"):
        check_preprocessor(v2, parts)
    made = [(p.system, p.user) for p in loaded.prompts(new_reports)]
    assert made == [(p.system, p.user) for p in v1.prompts(new_reports)]
    assert made != [(p.system, p.user) for p in v2.prompts(new_reports)]  # n_shots 1 vs 3

    from nyxmed.coder import load_coder
    from nyxmed.errors import NotFound

    coder = load_coder(release=str(registry.root), dtype="float32", device="cpu", max_new_tokens=4)
    assert coder.describe()["version"] == "v1" and coder.preprocessor.id == v1.id
    assert coder.describe()["adapter_sha256"] == registry.release("v1")["files"]["adapter_model.safetensors"]["sha256"]
    with pytest.raises(VerificationError, match="is not release v2's"):
        load_coder(release=str(registry.root), version="v2", preprocessor=str(pre_dirs["v1"]), device="cpu")
    registry.register(publish(tiny_adapter_dir, "v3", None, tmp_path / "staging" / "v3", "org/x",
                              preprocessor=pre_dirs["v1"])[-1])  # staged as for the Hub: manifest only
    with pytest.raises(NotFound, match="pass --preprocessor DIR"):
        load_coder(release=str(registry.root), version="v3", device="cpu")


def test_a_hub_release_carries_only_the_preprocessor_manifest_unless_asked(tmp_path, tiny_adapter_dir, preprocessor):
    from nyxmed.errors import OutputConflict
    from nyxmed.releases.hub import HubRegistry
    from nyxmed.releases.publish import full_preprocessor_for, publish

    pre_dir = tmp_path / "pre"
    preprocessor.save(pre_dir)
    staged = publish(tiny_adapter_dir, "v1", None, tmp_path / "staging", "org/coder", preprocessor=pre_dir)[-1]
    files = set(staged.release["files"])
    assert {"preprocessor/manifest.json", "preprocessor/settings.json"} <= files
    assert not any(f.startswith("preprocessor/") and f.split("/", 1)[1] not in ("manifest.json", "settings.json")
                   for f in files)
    assert staged.release["preprocessor"] == {"id": preprocessor.id, "complete": False}
    assert not list(staged.folder.rglob("pool.jsonl"))  # training reports never reach the staging folder
    with pytest.raises(OutputConflict, match="public"):
        full_preprocessor_for(HubRegistry("org/coder", private=False), include=True)
    assert full_preprocessor_for(HubRegistry("org/coder", private=True), include=True)


def test_the_model_card_lists_the_preprocessor(tmp_path, tiny_adapter_dir, preprocessor):
    from nyxmed.releases.publish import publish

    pre_dir = tmp_path / "pre"
    preprocessor.save(pre_dir)
    staged = publish(tiny_adapter_dir, "v1", None, tmp_path / "staging", "org/coder", preprocessor=pre_dir)[-1]
    card = (staged.folder / "README.md").read_text()
    assert "## Preprocessor" in card and preprocessor.id in card and "manifest and settings only" in card
    assert f"| few-shot examples | {preprocessor.retrieval.n_shots} |" in card


def test_a_preprocessor_file_changed_after_its_verification_is_not_released(tmp_path, tiny_adapter_dir, preprocessor):
    """publish verifies the preprocessor once and checks every staged copy against that manifest."""
    from nyxmed.preprocessor import verify
    from nyxmed.releases.staging import ChecksumMismatch, stage

    pre_dir = tmp_path / "pre"
    preprocessor.save(pre_dir)
    manifest = verify(pre_dir)
    ok = stage(tiny_adapter_dir, "v1", tmp_path / "ok", preprocessor=pre_dir, preprocessor_manifest=manifest)
    assert ok.release["preprocessor"] == {"id": preprocessor.id, "complete": True}
    name = next(rel for rel in manifest["files"] if rel.endswith(".jsonl"))
    (pre_dir / name).write_text((pre_dir / name).read_text() + "\n")  # after the verification
    with pytest.raises(ChecksumMismatch, match=f"file {name} changed while it was being released"):
        stage(tiny_adapter_dir, "v2", tmp_path / "v2", preprocessor=pre_dir, preprocessor_manifest=manifest)
    assert not (tmp_path / "v2").exists()  # nothing staged
