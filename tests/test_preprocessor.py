"""The saved preprocessor: the prompt it makes after a reload is the built dataset's, token for token."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nyxmed.config import Recipe, load_recipe
from nyxmed.dataset import build_dataset
from nyxmed.errors import NotFound, VerificationError
from nyxmed.preprocessor import ANSWER_RESERVE, Preprocessor
from nyxmed.synth import generate_cases


def _recipe(out_dir, dense: bool) -> Recipe:
    # max_length 3900: some held-out prompts of the tiny tokenizer are shortened, so truncation is compared too
    return load_recipe(None, [f"data.out_dir={out_dir}", "data.heldout_size=40", "data.val_size=10",
                              f"retrieval.dense={str(dense).lower()}", "retrieval.n_shots=3", "prompt.max_length=3900"])


@pytest.fixture(scope="module")
def cases():
    return generate_cases(220, 9)


@pytest.fixture(scope="module", params=[False, True], ids=["bm25", "bm25+dense"])
def built(request, tmp_path_factory, tiny_tokenizer, cases):
    return build_dataset(_recipe(tmp_path_factory.mktemp("pre"), request.param), tiny_tokenizer, cases, progress=False)


def test_reloaded_preprocessor_prompts_equal_the_heldout_input_ids(built, tiny_tokenizer, cases):
    pre = Preprocessor.load(built.out_dir / "preprocessor", tiny_tokenizer)
    assert pre.id == built.manifest["preprocessor_id"]
    heldout = built.dataset["heldout"]
    by_id = {c.id: c for c in cases}
    answers = [int((np.asarray(lab) != -100).sum()) for lab in heldout["labels"]]  # answer + <|eot_id|>
    made = pre.prompts([by_id[i] for i in heldout["id"]], answer_tokens=answers)
    shortened = 0
    for row, prompt, n_answer in zip(heldout, made, answers):
        ids = row["input_ids"]
        assert prompt is not None and prompt.id == row["id"]
        assert prompt.input_ids.tolist() == ids[:len(ids) - n_answer], row["id"]
        assert prompt.user == row["user"] and prompt.system == row["system"]
        shortened += bool(prompt.truncated)
    assert shortened and built.manifest["truncation"]["shortened_records"]  # the truncation path was compared too


def test_a_new_report_is_prompted_and_a_pooled_one_never_retrieves_itself(built, tiny_tokenizer, cases):
    pre = Preprocessor.load(built.out_dir / "preprocessor", tiny_tokenizer)
    train_ids = set(built.dataset["train"]["id"])
    pooled = next(c for c in cases if c.id in train_ids)
    prompt = pre.prompt(dataclasses.replace(pooled, id="new-1"))
    assert prompt.shots and pooled.id not in prompt.shots  # its own text is blocked by the content-hash layer
    assert "## Report to code\n" in prompt.user and prompt.messages[1]["content"] == prompt.user
    long = dataclasses.replace(cases[0], id="long-1", report_text=" ".join([cases[0].report_text] * 30))
    cut = pre.prompt(long)
    assert "body" in cut.truncated and len(cut.input_ids) <= pre.prompt_cfg.max_length - ANSWER_RESERVE


def test_a_damaged_or_mismatched_preprocessor_is_named_on_load(built, tiny_tokenizer, tmp_path):
    import shutil

    folder = tmp_path / "pre"
    shutil.copytree(built.out_dir / "preprocessor", folder)
    pool = folder / "pool.jsonl"
    pool.write_bytes(pool.read_bytes() + b" ")
    with pytest.raises(VerificationError, match="'pool.jsonl' is damaged"):
        Preprocessor.load(folder, tiny_tokenizer)
    shutil.copy(built.out_dir / "preprocessor" / "pool.jsonl", pool)
    (folder / "bm25" / "params.index.json").unlink()
    with pytest.raises(VerificationError, match="'bm25/params.index.json' is missing"):
        Preprocessor.load(folder, tiny_tokenizer)
    shutil.copy(built.out_dir / "preprocessor" / "bm25" / "params.index.json", folder / "bm25")
    assert Preprocessor.load(folder, tiny_tokenizer).id == built.manifest["preprocessor_id"]
    with pytest.raises(NotFound):
        Preprocessor.load(tmp_path / "nowhere", tiny_tokenizer)


def test_a_tokenizer_with_another_chat_template_is_refused(built, tiny_tokenizer):
    import copy

    other = copy.deepcopy(tiny_tokenizer)
    other.chat_template = tiny_tokenizer.chat_template + "{# changed #}"
    with pytest.raises(VerificationError, match="chat template"):
        Preprocessor.load(built.out_dir / "preprocessor", other)
