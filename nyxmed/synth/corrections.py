"""Primary-ICD corrections: cases whose first-pass line had another primary diagnosis than the reviewer's.

The continuation data of a next version (docs/training.md, "The next version"): half of the corrections
swap the primary within its ICD-10-CM family (the coder chose a sibling code of the same category), the
others reorder (the coder put a secondary diagnosis first).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from nyxmed.cases import Case
from nyxmed.codeline import CodeLine
from nyxmed.codes import icd10cm


def _family_sibling(code: str, rng: random.Random) -> str | None:
    """Another billable code of ``code``'s category that is not an 'unspecified' one (which would make the
    case a specificity pair), or None when the category has none."""
    siblings = [c for c in icd10cm.billable_in_category(code)
                if c != code and "unspecified" not in icd10cm.description(c).lower()]
    return rng.choice(siblings) if siblings else None


def with_primary_corrections(cases: Sequence[Case], share: float = 0.5, seed: int = 17) -> list[Case]:
    """``cases`` in order, up to a ``share`` of those without an original line given one whose primary ICD
    code differs from gold's, kept half family siblings and half reorderings: a case takes the kind made
    less often so far when it allows it (a sibling exists; two or more diagnoses), else stays as it is.
    CPT and modifiers are unchanged."""
    rng = random.Random(seed)
    out, made = [], {"family": 0, "reorder": 0}
    for case in cases:
        icd = list(case.codes.icd)
        if case.original_codes is not None or not icd or rng.random() >= share:
            out.append(case)
            continue
        original = None
        if made["family"] <= made["reorder"]:
            sibling = _family_sibling(icd[0], rng)
            original, kind = ([sibling, *icd[1:]], "family") if sibling else (None, "")
        elif len(icd) >= 2:
            original, kind = [icd[1], icd[0], *icd[2:]], "reorder"
        if original is None:
            out.append(case)
            continue
        made[kind] += 1
        out.append(dataclasses.replace(case, original_codes=CodeLine.of(case.codes.cpt, case.codes.modifiers,
                                                                        original)))
    return out


__all__ = ["with_primary_corrections"]
