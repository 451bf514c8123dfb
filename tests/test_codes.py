"""Code systems: ICD-10-CM hierarchy and releases, CPT/HCPCS shapes and licensed tables, modifiers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nyxmed.codes import check_code, cpt, icd10cm, modifiers
from nyxmed.codes.icd10cm import Relation

PACKAGE = Path(__file__).resolve().parents[1] / "nyxmed"


# ----------------------------------------------------------------------------- ICD-10-CM
@pytest.mark.parametrize("raw", ["m25511", "M25511", "M25.511", " m25 .511 ", "m 2 5 5 1 1"])
def test_icd_normalize_adds_dot_uppercases_and_strips_spaces(raw):
    assert icd10cm.normalize(raw) == "M25.511"


def test_icd_normalize_keeps_three_character_categories_without_dot():
    assert icd10cm.normalize("i10") == "I10"
    assert icd10cm.normalize("r10.") == "R10"


def test_icd_validity_and_billable_leaf():
    assert icd10cm.is_valid("M25.511") and icd10cm.is_billable("M25.511")
    assert icd10cm.is_valid("m25511") and icd10cm.is_billable("m25511")
    # categories and subcategories exist but are not leaves
    assert icd10cm.is_valid("M25") and not icd10cm.is_billable("M25")
    assert icd10cm.is_valid("M25.5") and not icd10cm.is_billable("M25.5")
    # a three-character category with no children is billable
    assert icd10cm.is_billable("I10")
    # FY2026 categories may have a letter in second place (QA0: genetic disorders)
    assert icd10cm.is_billable("QA0.8") and icd10cm.chapter("qa08") == "17"
    # 7th-character extensions are built from the tabular rules
    assert icd10cm.is_billable("S72.001A") and icd10cm.is_billable("S72001A")
    for bad in ("M25.599", "Z99.999", "XYZ", "", "12345", "M2", "M25-511"):
        assert not icd10cm.is_valid(bad), bad
        assert not icd10cm.is_billable(bad), bad
    # chapters and blocks are items of the release but not codes
    assert not icd10cm.is_valid("M20-M25") and not icd10cm.is_valid("13")


def test_icd_chapter_block_category():
    assert icd10cm.category("M25.511") == "M25"
    assert icd10cm.chapter("M25.511") == "13"
    assert icd10cm.block("M25.511") == "M20-M25"
    assert icd10cm.chapter("R10.84") == "18" and icd10cm.block("r1084") == "R10-R19"
    assert icd10cm.chapter("S72.001A") == "19"
    assert icd10cm.chapter("ZZZ.1") is None and icd10cm.block("ZZZ.1") is None


def test_icd_ancestors_nearest_first_and_descendants():
    assert icd10cm.ancestors("M25.511") == ("M25.51", "M25.5", "M25")
    assert icd10cm.ancestors("M25") == ()
    assert icd10cm.ancestors("M25.599") == ()  # invalid
    desc = icd10cm.descendants("M25.5")
    assert "M25.511" in desc and "M25.51" in desc and "M25.6" not in desc
    assert icd10cm.descendants("M25.511") == ()


def test_icd_ancestors_of_single_category_block_has_no_self_or_duplicates():
    # B99 is both a block and its only category: the hierarchy must not list it twice or as its own parent
    assert icd10cm.ancestors("B99") == ()
    assert icd10cm.ancestors("B99.8") == ("B99",)
    assert icd10cm.ancestors("C7A.00") == ("C7A.0", "C7A")
    assert icd10cm.relation("B99", "B99.8") == Relation.DESCENDANT


def test_icd_billable_in_category_are_all_leaves_of_that_category():
    codes = icd10cm.billable_in_category("M25.511")
    assert "M25.511" in codes and "M25.512" in codes
    assert all(c.startswith("M25") and icd10cm.is_billable(c) for c in codes)
    assert icd10cm.billable_in_category("ZZZ") == ()


@pytest.mark.parametrize(
    ("reference", "other", "expected"),
    [
        ("M25.511", "m25511", Relation.SAME),
        ("M25.511", "M25.5", Relation.ANCESTOR),  # prediction less specific
        ("M25.511", "M25", Relation.ANCESTOR),
        ("M25.5", "M25.511", Relation.DESCENDANT),  # prediction more specific
        ("M25.511", "M25.512", Relation.SIBLING),
        ("M25.511", "M25.00", Relation.SIBLING),  # same category, different branch
        ("M25.511", "M79.89", Relation.SAME_CHAPTER),
        ("M25.511", "I83.93", Relation.UNRELATED),
        ("ZZZ.1", "YYY.1", Relation.UNRELATED),
    ],
)
def test_icd_relation(reference, other, expected):
    assert icd10cm.relation(reference, other) is expected


def test_icd_all_billable_is_large_and_only_leaves():
    codes = icd10cm.all_billable()
    assert len(codes) > 70_000
    assert len(set(codes)) == len(codes)
    for c in codes[::997]:
        assert icd10cm.is_billable(c) and icd10cm.normalize(c) == c


def test_icd_description_raises_naming_the_code():
    assert "pain" in icd10cm.description("M25.511").lower()
    with pytest.raises(KeyError, match="M25.599"):
        icd10cm.description("M25.599")


TINY_TABULAR = """<?xml version="1.0" encoding="utf-8"?>
<ICD10CM.tabular>
  <version>2099</version>
  <introduction><introSection type="title"><title>Test release</title></introSection></introduction>
  <chapter>
    <name>1</name>
    <desc>Test chapter</desc>
    <section id="Q90-Q91">
      <desc>Test block</desc>
      <diag><name>Q90</name><desc>Test category</desc>
        <diag><name>Q90.0</name><desc>Leaf zero</desc></diag>
        <diag><name>Q90.1</name><desc>Subcategory one</desc>
          <diag><name>Q90.10</name><desc>Leaf one zero</desc></diag>
          <diag><name>Q90.11</name><desc>Leaf one one</desc></diag>
        </diag>
      </diag>
    </section>
  </chapter>
</ICD10CM.tabular>
"""


@pytest.fixture
def tiny_release(tmp_path):
    """A two-level release on disk, loaded for the test; the shipped release is restored after."""
    xml = tmp_path / "icd10cm_tabular_2099.xml"
    xml.write_text(TINY_TABULAR, encoding="utf-8")
    codes = tmp_path / "icd10cm_codes_2099.txt"
    codes.write_text("Q90 Test category\nQ900 Leaf zero\nQ9010 Leaf one zero\nQ9011 Leaf one one\n", encoding="utf-8")
    shipped = icd10cm.release_name()
    try:
        yield xml, codes
    finally:
        if icd10cm.release_name() != shipped:  # reloading costs seconds: only when a test left it switched
            icd10cm.load_release()
        assert icd10cm.release_name() == shipped


def test_load_release_switches_release_and_clears_caches(tiny_release):
    xml, codes = tiny_release
    # warm every cache with the shipped release first
    assert icd10cm.is_valid("M25.511") and icd10cm.is_billable("M25.511")
    assert icd10cm.ancestors("M25.511") and icd10cm.chapter("M25.511") == "13"
    assert not icd10cm.is_valid("Q90.10")
    icd10cm.load_release(str(xml), str(codes))
    assert icd10cm.release_name() == str(xml)
    assert not icd10cm.is_valid("M25.511") and not icd10cm.is_billable("M25.511")
    assert icd10cm.ancestors("M25.511") == () and icd10cm.chapter("M25.511") is None
    assert icd10cm.all_billable() == ("Q90.0", "Q90.10", "Q90.11")
    assert icd10cm.is_valid("q9010") and icd10cm.is_billable("Q90.10") and not icd10cm.is_billable("Q90.1")
    assert icd10cm.ancestors("Q90.10") == ("Q90.1", "Q90")
    assert icd10cm.chapter("Q90.11") == "1" and icd10cm.block("Q90.11") == "Q90-Q91"
    assert icd10cm.relation("Q90.10", "Q90.11") is Relation.SIBLING
    # back to the shipped release: the tiny release's answers must not linger in the caches
    icd10cm.load_release()
    assert icd10cm.is_valid("M25.511") and not icd10cm.is_valid("Q90.10")
    assert len(icd10cm.all_billable()) > 70_000


def test_load_release_needs_both_files(tiny_release):
    xml, _ = tiny_release
    with pytest.raises(ValueError, match="code_list"):
        icd10cm.load_release(str(xml))
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        icd10cm.load_release(str(xml), str(xml.parent / "nope.txt"))
    broken = xml.parent / "broken.xml"
    broken.write_text(TINY_TABULAR[:300], encoding="utf-8")
    with pytest.raises(ValueError, match="broken.xml.*not a tabular XML"):
        icd10cm.load_release(str(broken), str(xml.parent / "icd10cm_codes_2099.txt"))
    # the loaded release is untouched by a refused or failed switch
    assert icd10cm.is_valid("M25.511") and not icd10cm.is_valid("Q90.10")
    assert icd10cm.release_name() != str(broken)


# ----------------------------------------------------------------------------- CPT / HCPCS
@pytest.mark.parametrize(
    ("code", "kind"),
    [("74177", "cpt1"), ("0001F", "cpt2"), ("3288f", "cpt2"), ("0042T", "cpt3"), ("A0425", "hcpcs"),
     ("g0297", "hcpcs"), ("R0070", "hcpcs"), ("V2020", "hcpcs"),
     ("7417", None), ("741770", None), ("W1234", None), ("0001X", None), ("M25.511", None), ("", None),
     ("\u0667\u0664\u0661\u0667\u0667", None)],  # Arabic-Indic digits are not CPT digits
)
def test_cpt_kind_by_shape(code, kind):
    assert cpt.kind(code) == kind
    assert cpt.looks_like_procedure(code) is (kind is not None)


@pytest.mark.parametrize(
    ("code", "subsection"),
    [("70010", "diagnostic_radiology"), ("74177", "diagnostic_radiology"), ("76499", "diagnostic_radiology"),
     ("76506", "ultrasound"), ("76700", "ultrasound"), ("76999", "ultrasound"),
     ("77001", "radiologic_guidance"), ("77022", "radiologic_guidance"),
     ("77046", "mammography"), ("77067", "mammography"),
     ("77071", "bone_joint"), ("77080", "bone_joint"), ("77092", "bone_joint"),
     ("77261", "radiation_oncology"), ("77799", "radiation_oncology"),
     ("78012", "nuclear_medicine"), ("78815", "nuclear_medicine"), ("79999", "nuclear_medicine"),
     ("93880", "vascular_ultrasound"), ("93970", "vascular_ultrasound"), ("93990", "vascular_ultrasound"),
     ("70009", None), ("80000", None), ("93879", None), ("93991", None), ("99213", None),
     ("0042T", None), ("G0297", None)],
)
def test_cpt_radiology_subsections(code, subsection):
    assert cpt.subsection(code) == subsection
    assert cpt.is_radiology(code) is (subsection is not None)


def test_cpt_table_default_is_shape_only():
    table = cpt.CptTable()
    assert not table.strict
    assert table.is_valid("74177") and table.is_valid("99999") and table.is_valid("G0297")
    assert not table.is_valid("7417") and not table.is_valid("M25.511")


def test_cpt_table_from_csv_makes_validity_strict(tmp_path):
    path = tmp_path / "licensed.csv"
    # BOM and capitalised header as a spreadsheet writes them; the descriptions here are placeholders
    path.write_text("\ufeffCode,Description\n74177,placeholder one\n93970,placeholder two\ng0297,placeholder three\n",
                    encoding="utf-8")
    table = cpt.CptTable.from_csv(path)
    assert table.strict and table.source == str(path)
    assert table.is_valid("74177") and table.is_valid("G0297") and table.is_valid(" 93970 ")
    assert not table.is_valid("74176")  # right shape, not licensed in the table
    assert table.descriptions["74177"] == "placeholder one"
    assert check_code("74176", table)["valid"] is False
    assert check_code("74177", table)["cpt_table"] == str(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [("code,description\n74177,a\n7417,b\n", r":3: field 'code'.*'7417'"),
     ("code,description\n74177,a\n\n74176,b\nM25.511,c\n", r":5: field 'code'.*'M25.511'"),
     ("cpt,description\n74177,a\n", r":1: header has no 'code' column"),
     ("code,description\n", r"no codes"),
     ("code,description\n74177,a\n74177,b\n", r":3: code '74177' listed twice")],
)
def test_cpt_table_bad_rows_raise_naming_the_line(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as err:
        cpt.CptTable.from_csv(path)
    assert str(path) in str(err.value)


# AMA descriptor phrasing (CPT long descriptors are licensed; our own exam names never use it).
_DESCRIPTOR_PHRASES = re.compile(
    r"contrast material\(s\)|computed tomography,|magnetic resonance \(eg|radiologic examination,"
    r"|real time with image documentation|duplex scan of|without contrast material, followed by",
    re.I,
)
_RADIOLOGY_CODE = re.compile(r"(?<![0-9A-Za-z])(7[0-9]{4}|93[89][0-9]{2})(?![0-9A-Za-z])")


def _descriptor_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if _RADIOLOGY_CODE.search(ln) and _DESCRIPTOR_PHRASES.search(ln)]


def test_descriptor_detector_catches_a_descriptor_line():
    assert _descriptor_lines('CODES = {"74177": "Computed tomography, abdomen and pelvis; with contrast material(s)"}')
    assert not _descriptor_lines('EXAMS = {"74177": "CT abdomen pelvis with contrast"}')


def test_no_cpt_descriptors_are_shipped():
    """The package must not carry AMA CPT descriptor text next to radiology codes."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or path.suffix in {".pyc", ".so", ".safetensors", ".bin", ".parquet"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        offenders += [f"{path.relative_to(PACKAGE)}: {ln.strip()[:100]}" for ln in _descriptor_lines(text)]
    assert not offenders, "CPT descriptor text found:\n" + "\n".join(offenders)


# ----------------------------------------------------------------------------- modifiers
EXPECTED_MODIFIERS = {
    "26": "component", "TC": "component", "LT": "laterality", "RT": "laterality", "50": "laterality",
    "59": "distinct", "XE": "distinct", "XP": "distinct", "XS": "distinct", "XU": "distinct",
    "51": "multiple", "52": "reduced", "53": "reduced", "76": "repeat", "77": "repeat", "91": "repeat",
    "GA": "payer", "GZ": "payer", "Q0": "payer", "JW": "payer",
}


def test_modifier_table_has_every_radiology_modifier_with_its_kind():
    assert {code: m.kind for code, m in modifiers.MODIFIERS.items()} == EXPECTED_MODIFIERS
    for code, m in modifiers.MODIFIERS.items():
        assert m.code == code and m.description


def test_modifier_shape_and_known():
    assert modifiers.is_known("rt") and modifiers.is_known(" 26 ")
    assert modifiers.looks_like_modifier("ZZ") and not modifiers.is_known("ZZ")
    assert not modifiers.looks_like_modifier("RTT") and not modifiers.looks_like_modifier("R")
    assert not modifiers.looks_like_modifier("R-")


# ----------------------------------------------------------------------------- check_code
KEYS = {"code", "system", "valid", "billable", "chapter", "block", "category", "subsection", "kind", "cpt_table"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [("74177", {"system": "cpt1", "valid": True, "billable": True, "subsection": "diagnostic_radiology"}),
     ("93970", {"system": "cpt1", "subsection": "vascular_ultrasound"}),
     ("0042t", {"code": "0042T", "system": "cpt3", "subsection": None}),
     ("m25511", {"code": "M25.511", "system": "icd10cm", "valid": True, "billable": True, "chapter": "13",
                 "block": "M20-M25", "category": "M25"}),
     # HCPCS-shaped but a valid ICD-10-CM code without its dot: read as the diagnosis
     ("R1084", {"code": "R10.84", "system": "icd10cm", "valid": True, "billable": True, "chapter": "18"}),
     ("M25.5", {"system": "icd10cm", "valid": True, "billable": False, "category": "M25"}),
     ("M25.599", {"system": "icd10cm", "valid": False, "billable": False, "category": "M25"}),
     ("rt", {"code": "RT", "system": "modifier", "valid": True, "billable": False, "kind": "laterality"}),
     ("ZZ", {"system": "modifier", "valid": False, "kind": None}),
     ("hello", {"system": None, "valid": False, "billable": False})],
)
def test_check_code(code, expected):
    out = check_code(code)
    assert set(out) == KEYS
    for key, value in expected.items():
        assert out[key] == value, key
