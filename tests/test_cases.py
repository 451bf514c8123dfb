"""The case schema: every validation rule of case_from_record names the record and the field."""

from __future__ import annotations

import pytest

from nyxmed.cases import MAX_REPORT_CHARS, Case, InvalidCase, case_from_record, content_hash, normalize_text
from nyxmed.codeline import CodeLine
from nyxmed.codes.cpt import CptTable


def _record(**changes) -> dict:
    rec = {
        "id": "acc-001",
        "exam_description": "CT abdomen pelvis with contrast",
        "reason_for_exam": "Right lower quadrant pain",
        "report_text": "FINDINGS: No acute abnormality. IMPRESSION: Normal CT.",
        "cpt": ["74177"],
        "modifiers": ["26"],
        "icd": ["R10.31"],
        "patient_key": "p-9",
        "accession": "A123",
        "exam_date": "2025-03-01",
        "site": "north",
        "reviewed_at": "2025-03-02T10:00:00",
        "meta": {"modality": "CT"},
    }
    rec.update(changes)
    return rec


def _fails(record: dict, field: str, reason: str, table: CptTable | None = None,
           record_id: str | None = "acc-001") -> InvalidCase:
    with pytest.raises(InvalidCase) as err:
        case_from_record(record, table)
    exc = err.value
    assert (exc.record_id, exc.field) == (record_id, field), str(exc)
    assert reason in exc.reason, exc.reason
    assert str(exc).startswith(f"record {record_id!r}: field {field!r}: ")
    return exc


def test_valid_record_builds_a_case():
    case = case_from_record(_record(icd="r1031 K57.30", cpt="74177", modifiers=""))
    assert isinstance(case, Case)
    assert case.id == "acc-001" and case.site == "north" and case.meta == {"modality": "CT"}
    assert case.codes == CodeLine(("74177",), (), ("R10.31", "K57.30"))
    assert case.original_codes is None


def test_to_record_round_trips():
    case = case_from_record(_record(original_codes="74176, , R10.31"))
    again = case_from_record(case.to_record())
    assert again == case
    assert again.record_hash() == case.record_hash()
    assert case.to_record()["original_codes"] == "74176, , R10.31"


@pytest.mark.parametrize("rid", [None, "", "   ", float("nan")])
def test_missing_id(rid):
    _fails(_record(id=rid), "id", "missing or empty", record_id=None)


@pytest.mark.parametrize("text", [None, "", "  \n "])
def test_empty_report(text):
    _fails(_record(report_text=text), "report_text", "missing or empty")


def test_report_must_be_text():
    _fails(_record(report_text=["a"]), "report_text", "expected text")


def test_optional_texts_may_be_empty():
    case = case_from_record(_record(exam_description=None, reason_for_exam=""))
    assert case.exam_description == "" and case.reason_for_exam == ""


@pytest.mark.parametrize("icd", [["M25.599"], ["R10.31", "Q99.99"], "XYZ"])
def test_invalid_icd(icd):
    exc = _fails(_record(icd=icd), "icd", "invalid ICD-10-CM code")
    assert "'" in exc.reason  # the bad code itself is named


@pytest.mark.parametrize("cpt", [["7417"], ["741770"], "74177 ABCDE"])
def test_bad_cpt_shape(cpt):
    _fails(_record(cpt=cpt), "cpt", "bad CPT/HCPCS shape")


def test_cpt_not_in_licensed_table():
    table = CptTable({"74176": "placeholder"}, "licensed.csv")
    _fails(_record(), "cpt", "not in the licensed table licensed.csv", table)
    assert case_from_record(_record(cpt=["74176"]), table).codes.cpt == ("74176",)


@pytest.mark.parametrize("cpt", [None, [], "", float("nan")])
def test_no_cpt(cpt):
    _fails(_record(cpt=cpt), "cpt", "at least one CPT code is required")


@pytest.mark.parametrize("icd", [None, [], "", float("nan")])
def test_no_icd(icd):
    _fails(_record(icd=icd), "icd", "at least one ICD-10-CM code is required")


def test_bad_modifier():
    _fails(_record(modifiers=["R!"]), "modifiers", "bad modifier")
    _fails(_record(modifiers=["RTX"]), "modifiers", "bad modifier")


def test_code_fields_wrong_type():
    _fails(_record(icd={"a": 1}), "icd", "expected a list of codes")
    _fails(_record(cpt=[{"a": 1}]), "cpt", "expected codes as text")


# ----------------------------------------------------------------------------- the `codes` column
def _codes_record(line, **changes) -> dict:
    return _record(cpt=None, modifiers=None, icd=None, codes=line, **changes)


def test_codes_column_alternative():
    case = case_from_record(_codes_record("74177 71260, 26, r1031, K57.30"))
    assert case.codes == CodeLine(("74177", "71260"), ("26",), ("R10.31", "K57.30"))
    # spreadsheet blanks (NaN) in the unused fields do not hide the codes column
    nan = float("nan")
    case = case_from_record(_record(cpt=nan, modifiers=nan, icd=nan, codes="74176, , R10.31"))
    assert case.codes == CodeLine(("74176",), (), ("R10.31",))


@pytest.mark.parametrize(
    ("line", "reason"),
    [("not a code line", "cannot parse code line"),
     ("74177, 26, R10.31, oops", "not codes ['oops']"),
     ("74177, 26, M25.599", "invalid ICD-10-CM code 'M25.599'"),
     (", 26, R10.31", "at least one CPT code is required"),
     ("74177, 26", "at least one ICD-10-CM code is required")],
)
def test_codes_column_errors_name_the_codes_field(line, reason):
    _fails(_codes_record(line), "codes", reason)


def test_codes_column_must_be_text():
    _fails(_codes_record(["74177"]), "codes", "expected a code line as text")


def test_codes_column_must_agree_with_fields_when_both_are_given():
    assert case_from_record(_record(codes="74177, 26, R10.31")).codes.icd == ("R10.31",)
    _fails(_record(codes="74177, 26, R10.32"), "codes", "disagrees")


# ----------------------------------------------------------------------------- original_codes
def test_original_codes_parse():
    case = case_from_record(_record(original_codes="74176, , r1031<|eot_id|>"))
    assert case.original_codes == CodeLine(("74176",), (), ("R10.31",))


@pytest.mark.parametrize(("line", "reason"), [("garbage", "cannot parse code line"),
                                              ("74176, , R10.31 maybe", "not codes ['maybe']")])
def test_original_codes_bad(line, reason):
    _fails(_record(original_codes=line), "original_codes", reason)


def test_meta_must_be_a_map_and_optional_fields_scalars():
    _fails(_record(meta=["CT"]), "meta", "expected a map")
    _fails(_record(site=["north"]), "site", "expected text")


@pytest.mark.parametrize("meta", [[], 0, False, ""])
def test_meta_that_is_empty_but_not_a_map_is_rejected(meta):
    # only an absent meta (None, NaN) is the empty map; [] or false is a wrong value
    _fails(_record(meta=meta), "meta", f"expected a map, got {type(meta).__name__}")
    assert case_from_record(_record(meta=None)).meta == {} == case_from_record(_record(meta=float("nan"))).meta


def test_meta_that_json_cannot_hold_is_rejected():
    import datetime as dt

    _fails(_record(meta={"seen": dt.date(2025, 1, 2)}), "meta", "not JSON")  # write_cases would fail on it


@pytest.mark.parametrize("text", ["\u200b", " \u200b\u200d \n", "\ufeff\u2060", "\u200e\u200f\u00ad"])
def test_report_of_only_invisible_characters_is_blank(text):
    _fails(_record(report_text=text), "report_text", "blank: only invisible format characters")
    _fails(_record(id=text), "id", "missing or empty", record_id=None)
    assert case_from_record(_record(report_text="\u200bNormal.")).report_text == "\u200bNormal."


@pytest.mark.parametrize("name", ["report_text", "exam_description", "reason_for_exam"])
def test_text_longer_than_the_maximum_is_rejected(name):
    assert case_from_record(_record(**{name: "x" * MAX_REPORT_CHARS})).report_text
    exc = _fails(_record(**{name: "x" * (MAX_REPORT_CHARS + 1)}), name, "more than the maximum")
    assert f"{MAX_REPORT_CHARS + 1:,} characters" in exc.reason


# ----------------------------------------------------------------------------- hashes
def test_content_hash_ignores_case_punctuation_and_spacing_but_not_words():
    a = case_from_record(_record(report_text="FINDINGS: No acute abnormality."))
    b = case_from_record(_record(id="other", report_text="findings  no acute   abnormality"))
    c = case_from_record(_record(report_text="FINDINGS: Acute abnormality."))
    assert a.content_hash == b.content_hash != c.content_hash
    assert normalize_text("A,  b.\nC") == "a b c" and content_hash("A b") == content_hash("a, B!")


def test_record_hash_changes_with_codes_and_id():
    case = case_from_record(_record())
    assert case.with_codes(CodeLine.of("74177", "26", "R10.32")).record_hash() != case.record_hash()
    assert case_from_record(_record(id="acc-002")).record_hash() != case.record_hash()
    assert case_from_record(_record(site="south")).record_hash() == case.record_hash()
