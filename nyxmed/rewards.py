"""GRPO rewards on the code line, defined through :mod:`nyxmed.metrics` (formulas: docs/training.md).

Each completion is parsed once by :func:`nyxmed.codeline.parse` (the one parser) and scored
against the gold line by components; the reward is ``sum(weight[c] * component[c])``. Scores are
in [0, 1] (higher is better), penalties are counts or flags given as negative values:

- ``cpt``         = 0.5 [first CPT = gold first] + 0.5 [CPT set = gold set]
- ``modifiers``   = [modifier set = gold set], 0 when nothing parsed
- ``icd``         = 2 sum(credit) / (|gold| + |pred|), one-to-one hierarchy matching
                    (:func:`nyxmed.metrics.icd_hierarchical_match`: exact 1, category c, chapter h;
                    a predicted code that is not billable earns nothing)
- ``icd_primary`` = hierarchy credit of the first predicted ICD code against the gold first
- ``invalid_codes`` = -(codes that fail the code systems, and ICD codes that are not billable)

Billable only: a claim takes billable ICD-10-CM codes, and with category credit for a bare category
(``I70`` against gold ``I70.212``) a policy learns to write categories: safe partial credit, never
wrong at the leaf (measured on the demo: icd_exact 0.275 -> 0.015 in 150 steps, docs/performance.md).
- ``extra_codes``   = -(predicted codes matched to no gold code)
- ``unparseable``   = -[no code line]
- ``prose``         = -[anything besides one positional code line: prose, tokens dropped, more lines]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from nyxmed import metrics
from nyxmed.codeline import CodeLine, ParseResult, parse
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm
from nyxmed.config import RewardWeights

COMPONENTS = ("cpt", "modifiers", "icd", "icd_primary", "invalid_codes", "extra_codes", "unparseable", "prose")
_NOT_POSITIONAL = "fields not in position"
_MORE_LINES = "further line"


def hierarchy_credit(weights: RewardWeights) -> metrics.HierarchyCredit:
    """The ICD credits of the rewards: billable predictions only."""
    return metrics.HierarchyCredit(category=weights.icd_category_credit, chapter=weights.icd_chapter_credit,
                                   billable_only=True)


def is_prose(text: str, parsed: ParseResult) -> bool:
    """True when the output holds more than one positional code line (text around it, dropped tokens)."""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return (len(lines) > 1 or bool(parsed.dropped)
            or any(i.startswith((_NOT_POSITIONAL, _MORE_LINES)) for i in parsed.issues))


def reward_components(gold: CodeLine, text: str, weights: RewardWeights = RewardWeights(),
                      cpt_table: cpt_codes.CptTable | None = None) -> dict[str, float]:
    """The unweighted value of every component in :data:`COMPONENTS` for output ``text``."""
    parsed = parse(text)
    pred = parsed.line
    match = metrics.icd_hierarchical_match(gold.icd, pred.icd, hierarchy_credit(weights))
    primary = (metrics.icd_hierarchy_credit(gold.icd[0], pred.icd[0], hierarchy_credit(weights))
               if gold.icd and pred.icd else 0.0)
    extra = sum(c not in gold.cpt for c in pred.cpt) + sum(m not in gold.modifiers for m in pred.modifiers)
    return {
        "cpt": 0.5 * float(bool(pred.cpt) and bool(gold.cpt) and pred.cpt[0] == gold.cpt[0])
               + 0.5 * float(set(pred.cpt) == set(gold.cpt)),
        "modifiers": float(parsed.ok and set(pred.modifiers) == set(gold.modifiers)),
        "icd": match.score,
        "icd_primary": primary,
        "invalid_codes": float(-(len(pred.invalid_codes(cpt_table))
                                 + sum(icd10cm.is_valid(c) and not icd10cm.is_billable(c) for c in pred.icd))),
        "extra_codes": float(-(extra + len(match.unmatched_pred))),
        "unparseable": float(-int(not parsed.ok)),
        "prose": float(-int(parsed.ok and is_prose(text, parsed))),
    }


def component_weights(weights: RewardWeights) -> dict[str, float]:
    """Weight of each component, in :data:`COMPONENTS` order."""
    w = asdict(weights)
    return {c: float(w[c]) for c in COMPONENTS}


def reward(gold: CodeLine, text: str, weights: RewardWeights = RewardWeights(),
           cpt_table: cpt_codes.CptTable | None = None) -> float:
    """The weighted sum of the components; the gold line itself scores :func:`max_reward`."""
    values = reward_components(gold, text, weights, cpt_table)
    return sum(w * values[c] for c, w in component_weights(weights).items())


def max_reward(weights: RewardWeights = RewardWeights()) -> float:
    return weights.cpt + weights.modifiers + weights.icd + weights.icd_primary


@dataclass
class ComponentReward:
    """One component as a TRL reward function: ``(prompts, completions, answer=[...]) -> values``.

    TRL logs each reward function under its ``__name__`` (``rewards/<component>/mean``) and
    passes the dataset columns as keyword lists; ``answer`` holds the gold code lines.
    """

    component: str
    weights: RewardWeights
    cpt_table: cpt_codes.CptTable | None = None

    def __post_init__(self):
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown reward component {self.component!r} (known: {', '.join(COMPONENTS)})")
        self.__name__ = self.component

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str],
                 **_: Any) -> list[float]:
        return [reward_components(gold_line(a), _completion_text(c), self.weights,
                                  self.cpt_table)[self.component] for a, c in zip(answer, completions)]


def reward_functions(weights: RewardWeights, cpt_table: cpt_codes.CptTable | None = None) -> list[ComponentReward]:
    """One TRL reward function per component; pair with ``list(component_weights(weights).values())``."""
    return [ComponentReward(c, weights, cpt_table) for c in COMPONENTS]


def gold_line(answer: str) -> CodeLine:
    """The gold line of a dataset ``answer``; raises ValueError when it lacks a CPT or an ICD code."""
    line = parse(answer).line
    if not line.cpt or not line.icd:
        raise ValueError(f"gold answer {answer!r} needs at least one CPT and one ICD code")
    return line


def _completion_text(completion: Any) -> str:
    """A TRL completion: text (standard format) or a list of chat messages (conversational)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)
