"""The seeded generator: draws an exam, a patient, a setting and conditions from the tables, then writes the report."""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Mapping

from nyxmed.cases import Case
from nyxmed.codeline import CodeLine
from nyxmed.synth.conditions import CONDITIONS, Condition, F, S, T
from nyxmed.synth.exams import EXAMS, NORMALS, PARTS, ExamType
from nyxmed.synth.phrasing import (COMPARISONS, EXAM_LABELS, FILL_RULES, HISTORY_LABELS, IMPRESSION_TAILS,
                                   NORMAL_IMPRESSIONS, REASON_FORMS, REASON_FORMS_PLAIN, REASON_FORMS_STATUS,
                                   REGION_NORMAL_IMPRESSIONS)
from nyxmed.synth.setting import COMPONENT_MODIFIER, PLACES, SIDE_MODIFIER, SIDES, SITES

LAYOUTS = ("explicit", "embedded")


def _cum(weights) -> list[float]:
    return list(itertools.accumulate(weights))


_EXAM_CUM = _cum(e.weight for e in EXAMS)
_SITE_CUM = _cum(s[2] for s in SITES)


class _Draw:
    """Fast seeded draws (``random.Random.random`` only), so 100K cases take seconds, not minutes."""

    def __init__(self, seed: int):
        self.random = random.Random(seed).random

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]

    def int(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def real(self, lo: float, hi: float) -> float:
        return round(lo + self.random() * (hi - lo), 1)

    def chance(self, p: float) -> bool:
        return self.random() < p

    def weighted(self, items, cum: list[float]):
        return items[bisect.bisect_left(cum, self.random() * cum[-1])]


class _Fill(dict):
    """Template values of one case: fixed ones given, the rest drawn lazily by :data:`FILL_RULES`."""

    def __init__(self, draw: _Draw, exam: ExamType, fixed: Mapping[str, object]):
        super().__init__(fixed)
        self.draw, self.exam = draw, exam

    def __missing__(self, key: str):
        value = self[key] = FILL_RULES[key](self.draw, self.exam)
        return value


class _Overlay(dict):
    """A case's template values with a few replaced or added (another side, the indication's name)."""

    def __init__(self, base: Mapping[str, object], **values: object):
        super().__init__(values)
        self.base = base

    def __missing__(self, key: str):
        return self.base[key]


def _fmt(template: str, fill: Mapping[str, object]) -> str:
    return template.format_map(fill) if "{" in template else template


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _side_fill(fill: _Fill, side: str | None) -> Mapping[str, object]:
    if side is None or SIDES[side] == fill["side"]:
        return fill
    word = SIDES[side]
    return _Overlay(fill, side=word, Side=word.capitalize(), SIDE=word.upper())


def _side_part(exam: ExamType, side: str | None) -> str:
    part = PARTS[exam.key]
    if side is None:
        return part
    return f"{part}, both sides" if side == "B" else f"{SIDES[side]} {part}"


def _finding_side(draw: _Draw, exam_side: str | None, cond: Condition) -> str | None:
    """A lateral exam fixes the side; otherwise the finding falls on a random side."""
    if not cond.sided:
        return exam_side if exam_side in ("R", "L") else None
    if exam_side in ("R", "L"):
        return exam_side
    if "B" in cond.icd and (exam_side == "B" or draw.chance(0.15)):
        return "B"
    return draw.pick("RL")


@dataclass
class _Patient:
    key: str
    sex: str
    age: int


class _Patients:
    """A pool of invented patients, so a patient key repeats across exams."""

    def __init__(self, draw: _Draw, n: int):
        self.draw = draw
        self._keys: set[str] = set()
        self.pool = [self._new() for _ in range(max(1, n // 3))]
        self._fits: dict[str, list[_Patient]] = {}

    def _new(self, sex: str | None = None, ages: tuple[int, int] = (18, 90)) -> _Patient:
        d = self.draw
        key = f"P{d.int(10**7, 10**8 - 1)}"
        while key in self._keys:  # one key, one patient
            key = f"P{d.int(10**7, 10**8 - 1)}"
        self._keys.add(key)
        return _Patient(key, sex or d.pick("FM"), d.int(*ages))

    def pick(self, exam: ExamType) -> _Patient:
        fits = self._fits.get(exam.key)
        if fits is None:
            fits = [p for p in self.pool if exam.sex in (None, p.sex) and exam.ages[0] <= p.age <= exam.ages[1]]
            self._fits[exam.key] = fits
        if not fits or self.draw.chance(0.05):
            fits.append(self._new(exam.sex, exam.ages))
        return self.draw.pick(fits)


@lru_cache(maxsize=None)
def _fitting(exam: ExamType, sex: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The exam's indications, findings and incidentals a patient of this sex can have."""
    return tuple(tuple(k for k in keys if CONDITIONS[k].sex in (None, sex))
                 for keys in (exam.indications, exam.findings, exam.incidentals))


def _pick_codes(draw: _Draw, exam: ExamType, side: str | None, normal: bool, sex: str):
    """The coded conditions with their sides, the indication and its side."""
    indications, findings, incidentals = _fitting(exam, sex)
    indication = CONDITIONS[draw.pick(indications)]
    ind_side = _finding_side(draw, side, indication) if indication.sided else side
    coded = [(CONDITIONS[k], None) for k in exam.status]
    normal = normal or not findings  # nothing this patient can have was found: code the indication
    if indication.kind == T or normal:
        coded.append((indication, ind_side))
    if not normal:
        chosen = [draw.pick(findings)]
        if len(findings) > 1 and draw.chance(0.2):
            chosen.append(draw.pick([k for k in findings if k != chosen[0]]))
        if incidentals and draw.chance(0.35):
            inc = draw.pick(incidentals)
            if inc not in chosen:
                chosen.append(inc)
        more = [CONDITIONS[k] for k in chosen]
    elif indication.kind == S and len(indications) > 1 and draw.chance(0.15):
        more = [c for c in (CONDITIONS[draw.pick(indications)],) if c.kind == S]
    else:
        more = []
    for cond in more:  # one code per category: a coder never lists N20.0 with N20.1, or J18.1 with J18.9
        if all(cond.category != c.category for c, _ in coded):
            coded.append((cond, _finding_side(draw, side, cond)))
    return coded[:4], indication, ind_side


def _reason(draw: _Draw, indication: Condition, fill: Mapping[str, object], others: list[str]) -> str:
    name = _fmt(draw.pick(indication.names), fill)
    forms = REASON_FORMS_STATUS if indication.kind == T else REASON_FORMS if indication.ruleout else REASON_FORMS_PLAIN
    form = draw.pick(forms)
    text = form.format_map(_Overlay(fill, name=name, Name=_cap(name),
                                    ruleout=draw.pick(indication.ruleout) if indication.ruleout else ""))
    return " ".join([text, *(f"{_cap(extra)}." for extra in others)])  # a coded symptom or status must be stated



def _one_case(draw: _Draw, seed: int, i: int, patients: _Patients, base: date) -> Case:
    exam = draw.weighted(EXAMS, _EXAM_CUM)
    patient = patients.pick(exam)
    side = None
    if exam.side == "lat":
        side = draw.pick("RL")
    elif exam.side == "lat50":
        side = "B" if draw.chance(0.12) else draw.pick("RL")
    site, site_kind, _ = draw.weighted(SITES, _SITE_CUM)
    place = draw.pick(PLACES[site_kind])
    normal = not exam.findings or draw.chance(exam.p_normal)
    side_word = SIDES[side] if side else draw.pick(("right", "left"))
    fill = _Fill(draw, exam, {"side": side_word, "Side": side_word.capitalize(), "SIDE": side_word.upper(),
                              "part": _side_part(exam, side),
                              "age": patient.age, "sexw": "female" if patient.sex == "F" else "male"})
    coded, indication, ind_side = _pick_codes(draw, exam, side, normal, patient.sex)

    # --- codes: component modifier (26/TC), laterality (RT/LT/50), distinct (59), then repeat/reduced
    icd = [cond.code(s, _side_fill(fill, s)) for cond, s in coded]
    repeat = exam.key == "xr_chest_1v" and draw.chance(0.08)
    reduced = exam.modality == "mri" and draw.chance(0.04)
    mods = [m for m in (COMPONENT_MODIFIER[site_kind], SIDE_MODIFIER.get(side or ""), exam.distinct,
                        "76" if repeat else None, "52" if reduced else None) if m]
    codes = CodeLine(exam.cpt, tuple(mods), tuple(icd))  # normal form, one code per category (both tested)

    # --- text
    desc = _fmt(draw.pick(exam.names), fill)
    stated = [_fmt(draw.pick(c.names), _side_fill(fill, s)) for c, s in coded if c.kind != F and c is not indication]
    reason = _reason(draw, indication, _side_fill(fill, ind_side), stated)
    findings, impressions = [], []
    positive = [(c, s) for c, s in coded if c.kind == F]
    for n, (cond, s) in enumerate(positive):
        f = _side_fill(fill, s)
        findings.append(_fmt(draw.pick(cond.findings), f))
        impression = _fmt(draw.pick(cond.impressions), f)
        incidental = n >= 1 and draw.chance(0.4)
        impressions.append(f"Incidental: {impression[0].lower()}{impression[1:]}" if incidental else impression)
    avoid = [w for c, _ in positive for w in c.avoid]
    normals = [t for t in _NORMALS_LOWER[exam.region] if not any(w in t[1] for w in avoid)]
    picked = [_fmt(normals[j][0], fill) for j in _sample(draw, len(normals), draw.int(2, 4))]
    findings[1:1] = picked
    if not positive:
        ind_name = _fmt(indication.names[0], _side_fill(fill, ind_side))
        forms = NORMAL_IMPRESSIONS + REGION_NORMAL_IMPRESSIONS.get(exam.region, ()) * 2
        impressions.append(_fmt(draw.pick(forms), {"name": ind_name}))
    impressions[-1] += draw.pick(IMPRESSION_TAILS)
    if repeat:
        findings.insert(0, "Repeat radiograph, same day, after repositioning of the support lines.")
    if reduced:
        findings.insert(0, "Reduced service: the study was stopped early for patient discomfort; limited sequences obtained.")
    impression_text = (impressions[0] if len(impressions) == 1
                       else "\n".join(f"{n}. {t}" for n, t in enumerate(impressions, 1)))
    body = (f"LOCATION: {place}, {site}.\nTECHNIQUE: {_fmt(draw.pick(exam.technique), fill)}\n"
            f"COMPARISON: {_fmt(draw.pick(COMPARISONS), fill)}\nFINDINGS:\n{' '.join(findings)}\n"
            f"IMPRESSION:\n{impression_text}")
    layout = "explicit" if draw.chance(0.65) else "embedded"
    if layout == "embedded":  # the report body carries the exam and the reason; the fields stay empty
        body = f"{draw.pick(EXAM_LABELS)}: {desc}\n{draw.pick(HISTORY_LABELS)}: {reason}\n{body}"
        desc, reason = "", ""
    else:  # the fields are filled; the body repeats the indication (as dictated reports do) and the
        # technique names the exam, so the codes stay inferable when a prompt shows the body alone
        body = f"{draw.pick(HISTORY_LABELS)}: {reason}\n{body}"

    # --- specificity variant: a first-pass coder used the unspecified sibling; the reviewer corrected it
    original = None
    choices = [(n, cond.unspecified(s)) for n, (cond, s) in enumerate(coded)
               if cond.unspecified(s) and cond.unspecified(s) != icd[n]]
    if choices and draw.chance(SPECIFICITY_RATE):
        n, unspec = draw.pick(choices)
        original = CodeLine.of(codes.cpt, codes.modifiers, icd[:n] + [unspec] + icd[n + 1:])

    exam_day = base + timedelta(days=draw.int(0, 1094))
    reviewed = exam_day + timedelta(days=draw.int(1, 14))
    return Case(
        id=f"syn-{seed}-{i:06d}", exam_description=desc, reason_for_exam=reason, report_text=body,
        codes=codes, original_codes=original, patient_key=patient.key, accession=f"A{seed % 1000:03d}{i:08d}",
        exam_date=exam_day.isoformat(), site=site,
        reviewed_at=f"{reviewed.isoformat()}T{draw.int(7, 18):02d}:{draw.int(0, 59):02d}:00Z",
        meta={"modality": exam.modality, "exam_type": exam.key, "layout": layout, "hard": codes.is_hard,
              "specificity": original is not None, "normal": not positive, "setting": site_kind},
    )


# Chance that a case with an unspecified sibling available becomes a specificity pair (~10% of all cases).
SPECIFICITY_RATE = 0.2
_NORMALS_LOWER = {region: [(t, t.lower()) for t in texts] for region, texts in NORMALS.items()}


def _sample(draw: _Draw, n: int, k: int) -> list[int]:
    """``k`` distinct indexes below ``n`` (partial Fisher-Yates)."""
    idx = list(range(n))
    k = min(k, n)
    for j in range(k):
        r = j + int(draw.random() * (n - j))
        idx[j], idx[r] = idx[r], idx[j]
    return idx[:k]


def generate_cases(n: int, seed: int) -> list[Case]:
    """``n`` synthetic coder-reviewed radiology cases; the same seed always gives the same cases."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    draw = _Draw(seed)
    patients = _Patients(draw, n)
    base = date(2023, 1, 1)
    return [_one_case(draw, seed, i, patients, base) for i in range(n)]


def summary(cases: list[Case]) -> dict[str, object]:
    """Counts a user checks before training: exam types, modalities, layouts, hard and specificity cases."""
    def count(key: str) -> dict[str, int]:
        return dict(Counter(str(c.meta.get(key)) for c in cases).most_common())

    return {"cases": len(cases), "exam_types": len({c.meta.get("exam_type") for c in cases}),
            "patients": len({c.patient_key for c in cases}), "modalities": count("modality"),
            "layouts": count("layout"), "hard": sum(bool(c.meta.get("hard")) for c in cases),
            "specificity": sum(bool(c.meta.get("specificity")) for c in cases),
            "normal": sum(bool(c.meta.get("normal")) for c in cases),
            "distinct_icd": len({i for c in cases for i in c.codes.icd}),
            "distinct_cpt": len({p for c in cases for p in c.codes.cpt})}
