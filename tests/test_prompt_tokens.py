"""Piecewise prompt tokenization (dataset.PieceEncoder) gives exactly the ids of whole-prompt tokenization."""

from __future__ import annotations

import copy
import random

import pytest

from nyxmed import prompts
from nyxmed.dataset import PieceEncoder
from nyxmed.synth import generate_cases
from nyxmed.tiny import build_tokenizer


@pytest.fixture(scope="module")
def cases():
    return generate_cases(400, 5)


@pytest.fixture(scope="module")
def tokenizers(cases):
    gpt2 = build_tokenizer([c.report_text for c in cases] + [prompts.load_rules()] * 3, vocab_size=3000)
    llama3 = build_tokenizer([c.report_text for c in cases] + [prompts.load_rules()] * 3, vocab_size=3000,
                             split="llama3")
    return {"gpt2_digits": gpt2, "llama3_regex": llama3}


def _pieces(cases, seed):
    """Users built as the builder builds them, plus awkward edges at every cut: text ending in
    punctuation, spaces or newlines before the next heading, reports starting with
    spaces, digits or punctuation, '#' lines inside reports, no shots."""
    rng = random.Random(seed)
    rules = prompts.load_rules()
    out = []
    for i, c in enumerate(cases):
        shots = tuple(prompts.shot_for(x, 17, 0.5) for x in rng.sample(cases, rng.randint(0, 3)))
        body = c.report_text
        if i % 5 == 1:
            shots = tuple(prompts.Shot(rng.choice(["", " ", "\n", "1", "."]) + s.report + rng.choice([".", " ", "\n", ",", "  \n", ""]), s.answer + rng.choice([",", " ", ""]))
                          for s in shots)
            body = rng.choice(["\n# NOTE\n", "\n\n## x\n"]) + body + rng.choice([" ", "\n", ".\n\n", "!!"])
        r = rules + rng.choice(["", ".", " ", ":\n"]) if i % 7 == 3 else rules
        cpt = tuple(c.codes.cpt) if i % 11 else ()
        parts = prompts.PromptParts(shots, cpt, tuple(c.codes.icd), r, prompts.report_head(c, i % 2 == 0), body)
        out.append(prompts.user_pieces(parts))
        assert "".join(t for t, _ in out[-1]) == prompts.build_user(parts)
    return out


@pytest.mark.parametrize("name", ["gpt2_digits", "llama3_regex"])
def test_piecewise_ids_equal_whole_prompt_ids(cases, tokenizers, name):
    tok = tokenizers[name]
    enc = PieceEncoder(tok, prompts.SYSTEM_PROMPT)
    users = _pieces(cases, 1)
    got = enc.encode(users[:200]) + enc.encode(users[200:])  # second call reuses the cached recurring pieces
    assert len(enc.cache) > 50
    for pieces, ids in zip(users, got):
        text = prompts.render_prompt(tok, prompts.SYSTEM_PROMPT, "".join(t for t, _ in pieces))
        whole = tok(text, add_special_tokens=False)["input_ids"]
        assert ids.tolist() == whole
    assert enc.verify(users[:50])


def test_a_token_spanning_a_cut_is_detected(cases, tokenizers):
    """An added token "\n#" spans every cut: piecewise ids cannot be exact, and the encoder must say so."""
    tok = copy.deepcopy(tokenizers["gpt2_digits"])
    tok.add_tokens(["\n#"])
    users = _pieces(cases, 2)[:20]
    with pytest.raises(ValueError, match="pieces are not exact"):
        PieceEncoder(tok, prompts.SYSTEM_PROMPT).verify(users)
