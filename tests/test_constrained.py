"""Constrained decoding: the code-line grammar and generation under it (tiny model, xgrammar)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("xgrammar")

from nyxmed import constrained
from nyxmed.codeline import parse
from nyxmed.codes import icd10cm
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes.cpt import CptTable
from nyxmed.constrained import GrammarSettings, accepts_text, compile_code_line
from nyxmed.errors import UsageError
from nyxmed.generation import Chat, TransformersGenerator, _stop_token_ids
from nyxmed.synth import generate_cases

DOCS = Path(__file__).resolve().parents[1] / "docs" / "codeline.md"
# bounds small enough that every line fits in MAX_NEW tokens even spelled one character a token
SMALL = GrammarSettings(max_cpt=2, max_modifiers=2, max_icd=3)
MAX_NEW = 64


@pytest.fixture(scope="module")
def billable(tiny_tokenizer):
    return compile_code_line(tiny_tokenizer, _stop_token_ids(tiny_tokenizer))


def _is_clean(text: str, table: CptTable | None = None) -> bool:
    """Parses to a line with codes, none invalid, every diagnosis billable, every procedure a radiology
    one when there is no table (the grammar's default ``constrained_cpt: radiology``)."""
    line = parse(text).line
    return (bool(line.cpt and line.icd) and not line.invalid_codes(table) and all(map(icd10cm.is_billable, line.icd))
            and (table is not None or all(map(cpt_codes.is_radiology_procedure, line.cpt))))


def test_accepts_every_gold_line_of_a_large_synthetic_set(billable):
    lines = {c.codes.render() for c in generate_cases(3000, seed=5)}
    assert len(lines) > 500
    rejected = [ln for ln in lines if not accepts_text(billable, ln)]
    assert rejected == []


def test_docs_examples_are_accepted_exactly_when_their_codes_are_valid(billable):
    text = DOCS.read_text()
    examples = set(re.findall(r"^\| `([^`|]+)` \| [a-z]", text, re.M))  # the canonical examples table
    examples |= set(re.findall(r"^\| .+? \| `([^`]+)` \| ", text, re.M))  # the 'parsed line' column
    examples = {e for e in examples if parse(e).line.render() == e}
    assert len(examples) >= 8 and "74176, , M25.599" in examples
    for line in examples:
        assert accepts_text(billable, line) == _is_clean(line), line


@pytest.mark.parametrize("line", [
    "74177, , Z99.999",  # no such code
    "74177, , R10",  # a category with subcategories: valid, not billable
    "74177, ZZ, R10.84",  # a two-character token outside the modifier table
    "74177,, R10.84",  # not as rendered: the empty slot is ', , '
    "74177, , r10.84",  # lower case
    "74177, , R1084",  # without its dot
    "7417, , R10.84",  # no CPT shape
    "26003, , R10.84",  # a CPT shape outside the radiology ranges (constrained_cpt: radiology)
    "74177 99213, , R10.84",  # an office visit: not a radiology procedure
    "2600T, , R10.84",  # Category III codes start with 0
    "74177, , R10.84, R10.84, R10.84, R10.84, R10.84, R10.84, R10.84, R10.84, R10.84",  # 9 > max_icd 8
])
def test_rejects(billable, line):
    assert not accepts_text(billable, line)
    assert accepts_text(billable, "74177, 26 RT, R10.84, K57.30")


def test_radiology_procedures_by_default_every_shape_with_any(tiny_tokenizer, billable):
    for line in ("93971, 26 RT, I82.411", "0042T, , I63.9", "G0279 77067, , Z12.31", "79999, , C79.51"):
        assert accepts_text(billable, line), line
    wide = compile_code_line(tiny_tokenizer, _stop_token_ids(tiny_tokenizer), GrammarSettings(cpt="any"))
    assert accepts_text(wide, "26003 99213, , R10.84") and accepts_text(wide, "3319F, , R10.84")
    assert not accepts_text(billable, "3319F, , R10.84")  # Category II: performance measures, not billed
    with pytest.raises(UsageError, match="constrained_cpt"):
        GrammarSettings(cpt="surgery")


def test_valid_allows_categories_and_a_table_restricts_procedures(tiny_tokenizer):
    stops = _stop_token_ids(tiny_tokenizer)
    valid = compile_code_line(tiny_tokenizer, stops, GrammarSettings(icd="valid"))
    assert accepts_text(valid, "74177, , R10") and not accepts_text(valid, "74177, , Z99.999")
    table = CptTable({"74177": "CT abd/pelvis w contrast", "G0279": "tomosynthesis"}, "licensed.csv")
    strict = compile_code_line(tiny_tokenizer, stops, SMALL, table)
    assert accepts_text(strict, "74177 G0279, , R10.84")
    assert not accepts_text(strict, "74178, , R10.84")  # shape fine, not in the table
    assert not accepts_text(strict, "74177, , R10.84, K57.30, I83.93, M79.89")  # 4 > max_icd 3


def test_cached_by_tokenizer_codes_and_settings(tiny_tokenizer, billable):
    stops = _stop_token_ids(tiny_tokenizer)
    assert compile_code_line(tiny_tokenizer, stops) is billable
    assert compile_code_line(tiny_tokenizer, stops, SMALL) is not billable
    assert billable.compile_seconds > 0 and billable.memory_bytes > 0


def test_settings_are_checked():
    with pytest.raises(UsageError, match="billable, valid"):
        GrammarSettings(icd="leaf")
    with pytest.raises(UsageError, match="max_icd"):
        GrammarSettings(max_icd=0)
    assert 'root ::= cpts ", " modifiers? ", " icds' in constrained.code_line_ebnf()


# ----------------------------------------------------------------------------- generation
PROMPTS = [Chat(f"r{i}", "You are a certified radiology coder.", f"Report {i}: CT abdomen pelvis {'with ' * (i % 5)}"
                f"contrast, pain {i * 7919 % 1000}.") for i in range(200)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_base_dir):
    from nyxmed.generation import load_transformers

    return load_transformers(str(tiny_base_dir), device="cpu")


def _generate(lm, grammar=None, temperature=0.0, prompts=PROMPTS):
    import torch

    torch.manual_seed(0)
    gen = TransformersGenerator(*lm, batch_size=48, max_new_tokens=MAX_NEW, grammar=grammar, temperature=temperature)
    return gen.generate(prompts, progress=False)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_constrained_generations_always_parse_with_no_invalid_code(tiny_lm, temperature):
    free = _generate(tiny_lm, temperature=temperature)
    assert sum(not _is_clean(g.text) for g in free) > len(PROMPTS) // 2  # the control: unconstrained fails
    bound = _generate(tiny_lm, SMALL, temperature)
    # the grammar does not forbid repeating a code (a context-free grammar cannot, cheaply); parse drops repeats
    bad = [g.text for g in bound if not _is_clean(g.text) or set(parse(g.text).issues) - {"duplicate codes dropped"}]
    assert bad == []
    assert all(g.new_tokens < MAX_NEW for g in bound)  # every line ended at the end of the turn
    if temperature:  # sampling explores: many distinct lines
        assert len({g.text for g in bound}) > len(PROMPTS) // 2


class _Steer:
    """A logits processor steering each row to a target token sequence (unconstrained, the model emits it)."""

    def __init__(self, targets: dict[tuple[int, ...], list[int]], pad_id: int):
        self.targets, self.pad_id, self.start = targets, pad_id, None

    def __call__(self, input_ids, scores):
        self.start = input_ids.shape[1] if self.start is None else self.start
        step = input_ids.shape[1] - self.start
        for row, ids in enumerate(input_ids[:, :self.start].tolist()):
            target = self.targets[tuple(i for i in ids if i != self.pad_id)]
            if step < len(target):
                scores[row, target[step]] += 1e4
        return scores


def test_constrained_greedy_equals_unconstrained_when_that_is_a_valid_line(tiny_lm, monkeypatch):
    """Half the rows are steered to valid canonical lines, half to invalid ones (the control)."""
    from nyxmed.prompts import render_prompt

    model, tok = tiny_lm
    prompts = PROMPTS[:96]
    cases = generate_cases(len(prompts), seed=9)
    wanted = {c.id: (cases[i].codes.render() if i % 2 else f"74177, , Z99.{i:03d}") for i, c in enumerate(prompts)}
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    targets = {tuple(tok(render_prompt(tok, c.system, c.user), add_special_tokens=False)["input_ids"]):
               tok(wanted[c.id], add_special_tokens=False)["input_ids"] + [eot] for c in prompts}

    def steered(self, original=TransformersGenerator._decoding):
        kwargs = original(self)
        kwargs["logits_processor"] = [_Steer(targets, tok.pad_token_id), *kwargs.get("logits_processor", [])]
        return kwargs

    monkeypatch.setattr(TransformersGenerator, "_decoding", steered)
    free, bound = _generate(tiny_lm, prompts=prompts), _generate(tiny_lm, GrammarSettings(), prompts=prompts)
    assert [g.text for g in free] == [wanted[c.id] for c in prompts]  # steering works unconstrained
    valid = [i for i, g in enumerate(free) if _is_clean(g.text) and parse(g.text).line.render() == g.text]
    assert len(valid) == len(prompts) // 2
    assert all(bound[i] == free[i] for i in valid)
    others = [i for i in range(len(prompts)) if i not in valid]  # steered to an invalid code: the grammar deviates
    assert all(bound[i].text != free[i].text and _is_clean(bound[i].text) for i in others)
