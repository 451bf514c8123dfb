"""The synthetic case generator: valid codes, determinism, coverage, learnable text, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date

import pytest

from nyxmed import synth
from nyxmed.cases import case_from_record
from nyxmed.cli import main
from nyxmed.codeline import CodeLine
from nyxmed.codes import cpt, icd10cm
from nyxmed.codes.modifiers import MODIFIERS
from nyxmed.synth import CONDITIONS, EXAMS, MODALITIES, generate_cases


@pytest.fixture(scope="module")
def cases():
    return generate_cases(3000, 11)


def _condition_codes(cond) -> list[str]:
    codes = [cond.icd] if isinstance(cond.icd, str) else list(cond.icd.values())
    if cond.unspec:
        codes.append(cond.unspec)
    return [c.format(weeks=w) for c in codes for w in range(8, 23)] if "{" in "".join(codes) else codes


def test_every_table_code_is_billable_and_every_cpt_is_radiology():
    bad = [(c.key, code) for c in CONDITIONS.values() for code in _condition_codes(c) if not icd10cm.is_billable(code)]
    assert bad == []
    assert [(e.key, p) for e in EXAMS for p in e.cpt if not cpt.is_radiology(p)] == []
    referenced = {k for e in EXAMS for k in (*e.indications, *e.findings, *e.incidentals, *e.status)}
    assert referenced <= set(CONDITIONS), referenced - set(CONDITIONS)


def test_generated_codes_pass_the_code_systems_and_the_schema(cases):
    for case in cases:
        line = case.codes
        assert line == CodeLine.of(line.cpt, line.modifiers, line.icd), case.id  # already in normal form
        assert line.invalid_codes() == [], case.id
        assert 1 <= len(line.icd) <= 4, case.id
        assert len({icd10cm.category(i) for i in line.icd}) == len(line.icd), (case.id, line.icd)  # one per category
        assert all(icd10cm.is_billable(i) for i in line.icd), (case.id, line.icd)
        assert all(cpt.kind(p) == "cpt1" and cpt.is_radiology(p) for p in line.cpt), (case.id, line.cpt)
        assert all(m in MODIFIERS for m in line.modifiers), (case.id, line.modifiers)
        assert case_from_record(case.to_record()) == case
        # the record survives JSON (what `nyxmed synth` writes)
        assert case_from_record(json.loads(json.dumps(case.to_record()))) == case


def test_same_seed_same_cases_other_seed_other_cases():
    a = [c.to_record() for c in generate_cases(300, 7)]
    assert a == [c.to_record() for c in generate_cases(300, 7)]
    b = [c.to_record() for c in generate_cases(300, 8)]
    assert sum(x["report_text"] == y["report_text"] for x, y in zip(a, b)) < 30
    assert generate_cases(0, 7) == []
    with pytest.raises(ValueError, match="-1"):
        generate_cases(-1, 7)


def test_coverage_of_exam_types_modalities_layouts_and_hard_cases(cases):
    from nyxmed.composition import is_hard

    assert len(EXAMS) >= 40
    assert len({c.meta["exam_type"] for c in cases}) >= 40
    assert {c.meta["modality"] for c in cases} == set(MODALITIES)
    assert {c.meta["layout"] for c in cases} == set(synth.LAYOUTS)
    assert all(c.meta["hard"] == is_hard(c) for c in cases)
    hard = [c for c in cases if c.meta["hard"]]
    assert any(len(c.codes.cpt) >= 2 for c in hard) and any(len(c.codes.icd) >= 3 for c in hard)
    assert any(len(c.codes.modifiers) >= 2 for c in hard)
    assert 0.1 < len(hard) / len(cases) < 0.5
    cpts = {p for c in cases for p in c.codes.cpt}
    assert {"93970", "93971", "93925", "93926", "93880", "77065", "77066", "77067"} <= cpts
    mods = Counter(m for c in cases for m in c.codes.modifiers)
    assert {"26", "TC", "LT", "RT", "50", "59", "76", "52"} <= set(mods)


def test_specificity_variants_correct_an_unspecified_code(cases):
    from nyxmed.composition import is_specificity_pair

    pairs = [c for c in cases if c.meta["specificity"]]
    assert 0.06 < len(pairs) / len(cases) < 0.14
    assert all(c.original_codes is None for c in cases if not c.meta["specificity"])
    for case in pairs:
        gold, orig = case.codes, case.original_codes
        assert (orig.cpt, orig.modifiers) == (gold.cpt, gold.modifiers)
        changed = [(g, o) for g, o in zip(gold.icd, orig.icd) if g != o]
        assert len(changed) == 1 and len(orig.icd) == len(gold.icd), case.id
        g, o = changed[0]
        assert icd10cm.relation(g, o) in (icd10cm.Relation.ANCESTOR, icd10cm.Relation.SIBLING), (case.id, g, o)
        assert "unspecified" in icd10cm.description(o).lower(), (case.id, o)
        assert is_specificity_pair(case), case.id


def _name_pattern(name: str) -> str:
    parts = re.split(r"(\{[^}]*\})", name.lower())
    return "".join("(right|left|bilateral)" if p in ("{side}",) else r".+?" if p.startswith("{") else re.escape(p)
                   for p in parts)


def test_the_text_names_every_coded_condition(cases):
    """Learnability: each gold ICD code is named by the report (finding, reason or impression)."""
    by_code: dict[str, list] = {}
    for cond in CONDITIONS.values():
        for code in _condition_codes(cond):
            by_code.setdefault(code, []).append(cond)
    for case in cases:
        text = " ".join((case.exam_description, case.reason_for_exam, case.report_text)).lower()
        for code in case.codes.icd:
            conds = by_code[code]
            patterns = [_name_pattern(n) for c in conds for n in (*c.names, *c.impressions)]
            assert any(re.search(p, text) for p in patterns), (case.id, code, text)


def test_laterality_modifier_follows_the_side_in_the_text(cases):
    lateral = {e.key for e in EXAMS if e.side != "none"}
    seen = Counter()
    for case in cases:
        desc = case.exam_description or case.report_text.split("\n", 1)[0]
        side_mods = [m for m in case.codes.modifiers if m in ("RT", "LT", "50")]
        if case.meta["exam_type"] not in lateral:
            assert side_mods == [], case.id
            continue
        expected = {"RIGHT": "RT", "LEFT": "LT", "BILATERAL": "50"}[re.search(r"RIGHT|LEFT|BILATERAL", desc).group()]
        assert side_mods == [expected], (case.id, desc, case.codes.modifiers)
        seen[expected] += 1
        setting = case.meta["setting"]
        assert ("26" in case.codes.modifiers) == (setting == "hospital")
        assert ("TC" in case.codes.modifiers) == (setting == "office_tc")
    assert set(seen) == {"RT", "LT", "50"}


def test_layouts_and_metadata(cases):
    for case in cases:
        if case.meta["layout"] == "explicit":
            assert case.exam_description and case.reason_for_exam
            assert not case.report_text.startswith(("EXAM:", "PROCEDURE:", "STUDY:"))
            # the body alone still carries the indication (a prompt may show the body without the fields)
            assert f": {case.reason_for_exam}\n" in case.report_text.split("LOCATION:")[0], case.id
        else:
            assert case.exam_description == "" and case.reason_for_exam == ""
            head = case.report_text.split("\n", 2)
            assert re.match(r"(EXAM|PROCEDURE|STUDY): \S", head[0]) and ": " in head[1], case.id
        assert date.fromisoformat(case.exam_date) < date.fromisoformat(case.reviewed_at[:10])
        assert case.site in {s[0] for s in synth.SITES}
    assert len({c.id for c in cases}) == len({c.accession for c in cases}) == len(cases)
    visits = Counter(c.patient_key for c in cases)
    assert max(visits.values()) >= 3 and len(visits) < len(cases) * 0.6
    # sex-specific exams go to patients of that sex: a patient key never has both
    sexes: dict[str, set] = {}
    for case in cases:
        exam = synth.EXAM_TYPES[case.meta["exam_type"]]
        if exam.sex:
            sexes.setdefault(case.patient_key, set()).add(exam.sex)
    assert all(len(s) == 1 for s in sexes.values())
    # sex-specific conditions in sex-neutral exams (prostate cancer on a bone scan) fit the patient
    for case in cases:
        for code in case.codes.icd:
            sex = next((c.sex for c in CONDITIONS.values() if c.sex and code in _condition_codes(c)), None)
            if sex:
                other = {"F": " y/o male", "M": " y/o female"}[sex]
                assert other not in case.reason_for_exam + case.report_text, (case.id, code)


def test_cli_writes_the_cases_as_jsonl(tmp_path, capsys):
    from nyxmed.sources import read_cases

    out = tmp_path / "cases.jsonl"
    assert main(["synth", "--n", "60", "--seed", "3", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 60 and summary["out"] == str(out)
    lines = out.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [c.to_record() for c in generate_cases(60, 3)]
    assert len(read_cases(out).cases) == 60
    assert main(["synth", "--n", "5", "--out", str(tmp_path / "cases.txt")]) == 3  # InputError (docs/exit-codes.md)
    assert "unknown case file format" in capsys.readouterr().err
