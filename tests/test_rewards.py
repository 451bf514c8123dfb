"""GRPO rewards: hand-computed components and hypothesis properties of the hierarchy and penalties."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from nyxmed import metrics as M
from nyxmed import rewards as R
from nyxmed.codeline import CodeLine
from nyxmed.codes import icd10cm
from nyxmed.config import RewardWeights

W = RewardWeights()
CPTS = ["74177", "70551", "93970", "71046", "73721", "76700"]
MODS = ["26", "LT", "RT", "TC"]
_POOL = icd10cm.all_billable()[::37]
_BY_CATEGORY: dict[str, list[str]] = defaultdict(list)
for _c in _POOL:
    _BY_CATEGORY[icd10cm.category(_c)].append(_c)
_BY_CHAPTER: dict[str, list[str]] = defaultdict(list)
for _cat in _BY_CATEGORY:
    _BY_CHAPTER[icd10cm.chapter(_cat)].append(_cat)
# gold codes that have a sibling in their category and another category in their chapter
_RICH = [c for c in _POOL if len(_BY_CATEGORY[icd10cm.category(c)]) > 1
         and len(_BY_CHAPTER[icd10cm.chapter(c)]) > 1]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def relatives(code: str) -> tuple[str, str, str]:
    """(same category, same chapter, unrelated) codes for ``code``, picked deterministically."""
    cat, ch = icd10cm.category(code), icd10cm.chapter(code)
    same_cat = next(c for c in _BY_CATEGORY[cat] if c != code)
    other_cat = next(k for k in _BY_CHAPTER[ch] if k != cat)
    other_ch = next(k for k in _BY_CHAPTER if k != ch)
    return same_cat, _BY_CATEGORY[other_cat][0], _BY_CATEGORY[_BY_CHAPTER[other_ch][0]][0]


def unrelated_to(codes: list[str]) -> str:
    chapters = {icd10cm.chapter(c) for c in codes}
    ch = next(k for k in _BY_CHAPTER if k not in chapters)
    return _BY_CATEGORY[_BY_CHAPTER[ch][0]][0]


@st.composite
def gold_lines(draw) -> CodeLine:
    cpt = draw(st.lists(st.sampled_from(CPTS), min_size=1, max_size=2, unique=True))
    mods = draw(st.lists(st.sampled_from(MODS), max_size=2, unique=True))
    icd = draw(st.lists(st.sampled_from(_RICH), min_size=1, max_size=4, unique=True))
    return CodeLine.of(cpt, mods, icd)


@st.composite
def predictions(draw, gold: CodeLine) -> CodeLine:
    """A perturbation of ``gold``: codes dropped, reordered, replaced by relatives."""
    icd = [draw(st.sampled_from([c, *relatives(c)])) for c in gold.icd]
    icd = draw(st.permutations(icd))[: draw(st.integers(0, len(icd)))]
    cpt = draw(st.lists(st.sampled_from(CPTS), min_size=1, max_size=2, unique=True))
    mods = draw(st.lists(st.sampled_from(MODS), max_size=2, unique=True))
    return CodeLine.of(cpt, mods, icd)


def test_components_by_hand():
    gold = CodeLine.of(["74177"], ["26"], ["R10.84", "K57.30"])
    assert R.reward(gold, gold.render()) == R.max_reward(W) == 4.5
    c = R.reward_components(gold, "74177, 26, R10.84, K57.30, S72.001A")
    assert c["icd"] == pytest.approx(2 * 2 / 5) and c["extra_codes"] == -1 and c["icd_primary"] == 1
    c = R.reward_components(gold, "74176 74177, 26, R10.9, K57.30")  # wrong primary CPT, sibling ICD
    assert c["cpt"] == 0 and c["icd"] == pytest.approx(2 * 1.5 / 4) and c["icd_primary"] == 0.5
    assert c["extra_codes"] == -1
    c = R.reward_components(gold, "74177, 26, R10.9Z9, K57.30")  # an invalid code in R10
    assert c["invalid_codes"] == -1 and c["icd_primary"] == 0 and c["icd"] == pytest.approx(0.5)
    assert R.reward_components(gold, "hello there")["unparseable"] == -1
    assert R.reward_components(gold, "")["modifiers"] == 0  # nothing parsed earns no modifier credit
    assert R.reward_components(gold, "Codes: 74177, 26, R10.84, K57.30\nbecause of pain")["prose"] == -1
    assert R.reward_components(gold, "74177, 26, R10.84, K57.30")["prose"] == 0


def test_hierarchical_match_is_one_to_one():
    m = M.icd_hierarchical_match(["R10.84"], ["R10.9", "R10.10"])  # two siblings share one gold code
    assert len(m.pairs) == 1 and m.score == pytest.approx(2 * 0.5 / 3) and len(m.unmatched_pred) == 1
    m = M.icd_hierarchical_match(["R10.84", "R10.9"], ["R10.9", "R10.84"])
    assert m.score == 1 and not m.unmatched_pred
    with pytest.raises(ValueError, match="chapter"):
        M.HierarchyCredit(category=0.2, chapter=0.5)


@SETTINGS
@given(st.sampled_from(_RICH), st.sampled_from(CPTS), st.lists(st.sampled_from(MODS), max_size=2, unique=True))
def test_exact_beats_category_beats_chapter_beats_unrelated(code, cpt, mods):
    gold = CodeLine.of([cpt], mods, [code])
    scores = [R.reward(gold, CodeLine.of([cpt], mods, [c]).render()) for c in (code, *relatives(code))]
    assert scores[0] > scores[1] > scores[2] > scores[3]


@SETTINGS
@given(st.data())
def test_adding_a_wrong_code_lowers_the_reward(data):
    gold = data.draw(gold_lines())
    pred = data.draw(predictions(gold))
    before = R.reward(gold, pred.render())
    wrong_icd = unrelated_to([*gold.icd, *pred.icd])
    assert R.reward(gold, CodeLine.of(pred.cpt, pred.modifiers, [*pred.icd, wrong_icd]).render()) < before
    wrong_cpt = next(c for c in CPTS if c not in gold.cpt and c not in pred.cpt)
    assert R.reward(gold, CodeLine.of([*pred.cpt, wrong_cpt], pred.modifiers, pred.icd).render()) < before


@SETTINGS
@given(st.data())
def test_an_invalid_code_scores_below_any_valid_one(data):
    gold = data.draw(gold_lines())
    pred = data.draw(predictions(gold))
    slot = data.draw(st.integers(0, len(pred.icd)))
    invalid = icd10cm.category(data.draw(st.sampled_from(gold.icd))) + ".9Z9"  # a real category, no such code
    assert not icd10cm.is_valid(invalid)
    valid = data.draw(st.sampled_from(_POOL).filter(lambda c: c not in pred.icd))

    def with_code(code: str) -> float:
        icd = [*pred.icd[:slot], code, *pred.icd[slot:]]
        return R.reward(gold, CodeLine.of(pred.cpt, pred.modifiers, icd).render())

    assert with_code(invalid) < with_code(valid)


@SETTINGS
@given(st.data())
def test_the_gold_line_gets_the_maximum(data):
    gold = data.draw(gold_lines())
    top = R.reward(gold, gold.render())
    assert top == pytest.approx(R.max_reward(W))
    assert R.reward(gold, data.draw(predictions(gold)).render()) <= top
    assert R.reward(gold, data.draw(st.text(max_size=60))) < top


def test_trl_reward_functions_name_components_and_read_the_answer_column():
    funcs = R.reward_functions(W)
    assert [f.__name__ for f in funcs] == list(R.COMPONENTS)
    answers = ["74177, 26, R10.84", "70551, , R51.9"]
    completions = ["74177, 26, R10.84", "oops"]
    values = {f.__name__: f(prompts=["p", "q"], completions=completions, answer=answers, trainer_state=None)
              for f in funcs}
    weights = R.component_weights(W)
    totals = [sum(weights[c] * values[c][i] for c in R.COMPONENTS) for i in range(2)]
    assert totals == [R.reward(CodeLine.of(["74177"], ["26"], ["R10.84"]), completions[0]), -W.unparseable]
    with pytest.raises(ValueError, match="gold answer"):
        funcs[0](prompts=["p"], completions=["x"], answer=["no codes"])


def test_a_bare_category_earns_nothing_and_counts_as_invalid():
    """The hack GRPO found on the demo: writing the 3-character category for safe category credit."""
    gold = CodeLine.of(["93925"], [], ["I70.212"])
    category = R.reward_components(gold, "93925, , I70")
    sibling = R.reward_components(gold, "93925, , I70.213")
    assert category["icd"] == 0 and category["icd_primary"] == 0 and category["invalid_codes"] == -1
    assert sibling["icd"] > 0 and sibling["invalid_codes"] == 0
    assert R.reward(gold, "93925, , I70.213") > R.reward(gold, "93925, , I70")
    # the evaluator's hierarchy credit is unchanged: a category is a valid (if not billable) code there
    assert M.icd_hierarchy_credit("I70.212", "I70") == M.HierarchyCredit().category
