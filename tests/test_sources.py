"""Case sources: every reject reason in every format, reconciliation, round trips, PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nyxmed.cases import MAX_REPORT_CHARS
from nyxmed.cli import main as cli_main
from nyxmed.codeline import CodeLine
from nyxmed.errors import InputError
from nyxmed.sources import (
    CODE_FIELDS, FIELDS, MAX_NESTING, RECORD_FIELDS, FileSource, PgSource, SourceError, counts_path_for, iter_records,
    parse_mapping, read_cases, source_from_spec, summary_tables, write_cases,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def good(i: int, **over) -> dict:
    rec = {"id": f"c{i}", "exam_description": "CT abdomen pelvis with contrast", "reason_for_exam": "abdominal pain",
           "report_text": f"Findings {i}: sigmoid diverticulosis. Impression: no acute abnormality.",
           "cpt": ["74177"], "modifiers": ["26"], "icd": ["R10.84", "K57.30"], "original_codes": None,
           "patient_key": f"p{i}", "accession": None, "exam_date": "2025-01-02", "site": "north",
           "reviewed_at": None, "meta": {"modality": "CT"}}
    rec.update(over)
    return rec


# (record, expected field, reason fragment): rejects that every format can express
COMMON_BAD = [
    (good(90, id=""), "id", "missing"),
    (good(91, icd=[]), "icd", "at least one ICD-10-CM code"),
    (good(92, icd=["R10.84", "Z99.99"]), "icd", "invalid ICD-10-CM code 'Z99.99'"),
    (good(93, cpt=["7417"]), "cpt", "bad CPT/HCPCS shape '7417'"),
    (good(1, report_text="different text"), "id", "duplicate id 'c1'"),
    (good(94, report_text="   "), "report_text", "missing or empty"),
    (good(95, modifiers=["2X6"]), "modifiers", "bad modifier"),
]


def _write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _csv_row(rec: dict) -> dict:
    """A record as CSV cells; a ``meta`` given as text is written as it is."""
    return {k: (" ".join(v) if k in CODE_FIELDS else json.dumps(v) if k == "meta" and not isinstance(v, str)
                else "" if v is None else v) for k, v in rec.items()}


def _write_csv(path: Path, recs: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
        w.writeheader()
        w.writerows(_csv_row(r) for r in recs)
    return path


def _check(result, expected: dict[int, tuple[str, str]], n_good: int) -> None:
    """Each expected record number is rejected on that field with that reason; counts reconcile."""
    got = {r.record_no: (r.field, r.reason) for r in result.rejects}
    assert set(got) == set(expected), (got, expected)
    for no, (fld, fragment) in expected.items():
        assert got[no][0] == fld and fragment in got[no][1], (no, got[no], fld, fragment)
    c = result.counts
    assert (c["read"], c["accepted"], c["rejected"]) == (n_good + len(expected), n_good, len(expected))
    assert len(result.cases) == n_good


# ----------------------------------------------------------------------------- JSONL
def test_jsonl_every_reject_reason(tmp_path):
    goods = [good(i) for i in range(3)]
    lines = [json.dumps(r).encode() for r in goods + [b for b, _, _ in COMMON_BAD]]
    expected = {4 + i: (f, frag) for i, (_, f, frag) in enumerate(COMMON_BAD)}
    extra = [
        (b'{"id": "j1", "report_text": ', "record", "bad JSON"),
        (b'["not", "an", "object"]', "record", "wrong type: expected a JSON object, got list"),
        (json.dumps(good(96, cpt=74177)).encode(), "cpt", "got int"),
        (json.dumps(good(97, meta=["a"])).encode(), "meta", "expected a map"),
        (json.dumps(good(98, site={"a": 1})).encode(), "site", "expected text, got dict"),
        (json.dumps(good(99, report_text=12)).encode(), "report_text", "expected text, got int"),
        (json.dumps(good(100)).encode().replace(b"Findings", b"Find\xffings"), "report_text", "undecodable bytes"),
        (b'{"id": "j2", \xff\xfe "x": 1}', "record", "undecodable bytes"),
        (json.dumps(good(101)).encode().replace(b'"74177"', b'"7417\xff"'), "cpt", "undecodable bytes"),
        (json.dumps(good(102)).encode().replace(b'"CT"}', b'"C\xffT"}'), "meta", "undecodable bytes"),
        (b'{"id": "j3", "report_text": "a", "icd": ["R10.84"], "cpt": ["74177"], "icd": []}', "icd", "appears twice"),
    ]
    start = len(lines) + 2  # a blank line sits before the extras: not a record, but it counts as a line
    lines += [b"   "] + [raw for raw, _, _ in extra]
    expected.update({start + i: (f, frag) for i, (_, f, frag) in enumerate(extra)})
    result = read_cases(_write_jsonl(tmp_path / "cases.jsonl", lines), rejects_path=tmp_path / "rejects.jsonl")
    _check(result, expected, n_good=3)
    assert [c.id for c in result.cases] == ["c0", "c1", "c2"]
    assert len((tmp_path / "rejects.jsonl").read_text().splitlines()) == len(expected)
    undecodable = next(r for r in result.rejects if r.field == "report_text" and "undecodable" in r.reason)
    assert undecodable.id == "c100"


def test_rejects_file_and_counts_reconcile(tmp_path):
    lines = [json.dumps(good(i)).encode() for i in range(4)] + [b"{oops", json.dumps(good(2)).encode()]
    rejects = tmp_path / "out" / "rejects.jsonl"
    result = read_cases(_write_jsonl(tmp_path / "c.jsonl", lines), rejects_path=rejects)
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [(r["record_no"], r["id"], r["field"]) for r in rows] == [(5, None, "record"), (6, "c2", "id")]
    assert all(r["source"] == str(tmp_path / "c.jsonl") and r["reason"] for r in rows)
    counts = json.loads(counts_path_for(rejects).read_text())
    assert counts_path_for(rejects).name == "rejects.counts.json"
    assert counts == result.counts
    assert counts["read"] == counts["accepted"] + counts["rejected"] == 6
    assert counts["rejected_by_field"] == {"id": 1, "record": 1}


def test_unknown_columns_are_reported_not_dropped_silently(tmp_path):
    lines = [json.dumps(good(0, priority="stat")).encode(), json.dumps(good(1, priority="routine")).encode()]
    result = read_cases(_write_jsonl(tmp_path / "c.jsonl", lines))
    assert result.counts["ignored_columns"] == {"priority": 2}
    assert result.counts["accepted"] == 2


# ----------------------------------------------------------------------------- CSV
def test_csv_every_reject_reason(tmp_path):
    goods = [good(i) for i in range(3)]
    path = _write_csv(tmp_path / "cases.csv", goods + [b for b, _, _ in COMMON_BAD] + [good(97, meta=["a"])])
    expected = {5 + i: (f, frag) for i, (_, f, frag) in enumerate(COMMON_BAD)}  # header is line 1
    expected[5 + len(COMMON_BAD)] = ("meta", "expected a map")
    text = path.read_bytes()
    n = len(text.splitlines()) + 1
    row = _csv_row(good(98))
    bad_bytes = ",".join(row[k] if k != "reason_for_exam" else "pain \xff" for k in RECORD_FIELDS)
    text += bad_bytes.encode("latin-1") + b"\n"  # \xff alone is not UTF-8
    text += b"c99,too,few,fields\n"
    text += b'c100,a,b,c,74177,26,R10.84,,,,,,,"{not json"\n'
    path.write_bytes(text)
    expected.update({n: ("reason_for_exam", "undecodable bytes"),
                     n + 1: ("record", "wrong number of fields: 4, the header has 14"),
                     n + 2: ("meta", "bad JSON in meta")})
    result = read_cases(path)
    _check(result, expected, n_good=3)
    assert next(r for r in result.rejects if r.record_no == n).id == "c98"


def test_csv_multiline_field_keeps_line_numbers(tmp_path):
    path = _write_csv(tmp_path / "c.csv", [good(0, report_text="line one\nline two\nline three"), good(1, icd=["Z99.99"])])
    result = read_cases(path)
    assert result.cases[0].report_text == "line one\nline two\nline three"
    assert [(r.record_no, r.field) for r in result.rejects] == [(5, "icd")]  # rows start on lines 2 and 5


def test_csv_header_problems_are_unusable_input(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id,id,report_text\n1,2,x\n")
    with pytest.raises(SourceError, match="unique"):
        read_cases(path)


def test_column_mapping_renames_file_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("case_id,body,cpt_codes,icd,modifiers\nk1,Findings normal.,74177,R10.84,26\n")
    result = read_cases(source_from_spec(path, mapping=parse_mapping(["case_id=id", "body=report_text", "cpt_codes=cpt"])))
    assert [c.id for c in result.cases] == ["k1"] and result.cases[0].codes.render() == "74177, 26, R10.84"
    with pytest.raises(SourceError, match="unknown field 'nope'"):
        parse_mapping(["x=nope"])
    # a mapping onto a column the file already has would hide one of them: each row is rejected
    clash = read_cases(source_from_spec(path, mapping={"case_id": "id", "cpt_codes": "icd"}))
    assert {(r.field, r.id) for r in clash.rejects} == {("icd", "k1")} and "two columns" in clash.rejects[0].reason


# ----------------------------------------------------------------------------- Parquet
def test_parquet_every_reject_reason(tmp_path):
    recs = [good(i) for i in range(3)] + [b for b, _, _ in COMMON_BAD]
    recs += [good(97, meta="[1, 2]"), good(98, meta="{nope"), good(99)]
    expected = {4 + i: (f, frag) for i, (_, f, frag) in enumerate(COMMON_BAD)}
    base = 4 + len(COMMON_BAD)
    expected.update({base: ("meta", "expected a map"), base + 1: ("meta", "bad JSON in meta"),
                     base + 2: ("reason_for_exam", "undecodable bytes")})
    cols = {k: [r[k] for r in recs] for k in RECORD_FIELDS}
    cols["meta"] = [m if isinstance(m, str) else json.dumps(m) for m in cols["meta"]]
    # a binary column is how non-UTF-8 text reaches Parquet
    cols["reason_for_exam"] = [r.encode() for r in cols["reason_for_exam"][:-1]] + [b"pain \xff"]
    types = {k: pa.list_(pa.string()) if k in CODE_FIELDS else pa.binary() if k == "reason_for_exam" else pa.string()
             for k in RECORD_FIELDS}
    path = tmp_path / "cases.parquet"
    pq.write_table(pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()}), path)
    result = read_cases(path)
    _check(result, expected, n_good=3)
    assert result.cases[0].reason_for_exam == "abdominal pain"  # binary that is UTF-8 decodes


def test_parquet_dates_and_map_meta(tmp_path):
    import datetime as dt

    table = pa.table({"id": ["d1"], "report_text": ["Normal."], "cpt": [["74177"]], "icd": [["R10.84"]],
                      "exam_date": pa.array([dt.date(2025, 2, 3)]),
                      "meta": pa.array([[("modality", "CT")]], type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(table, tmp_path / "d.parquet")
    (case,) = read_cases(tmp_path / "d.parquet").cases
    assert case.exam_date == "2025-02-03" and case.meta == {"modality": "CT"}


def test_corrupt_parquet_is_unusable(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        read_cases(tmp_path / "x.parquet")


# ----------------------------------------------------------------------------- round trips
def _varied_cases():
    cases = read_cases(EXAMPLES / "cases.jsonl").cases
    assert len(cases) == 5
    odd = replace(cases[0], id="rt-1", report_text='Quote "x", comma, ünïcödé\nnew line', meta={"n": 3, "hard": True},
                  codes=CodeLine.of(["93970", "76700"], [], ["I83.93"]))
    return cases + [odd]


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_write_read_round_trip(tmp_path, ext):
    cases = _varied_cases()
    path = write_cases(cases, tmp_path / f"cases.{ext}")
    result = read_cases(path)
    assert result.rejects == [] and result.cases == cases
    again = write_cases(result.cases, tmp_path / f"again.{ext}")
    assert again.read_bytes() == path.read_bytes()  # deterministic: re-writing changes nothing


def test_examples_agree_across_formats():
    jsonl = read_cases(EXAMPLES / "cases.jsonl")
    csv_cases = read_cases(EXAMPLES / "cases.csv").cases + read_cases(EXAMPLES / "cases_codes_column.csv").cases
    assert jsonl.counts["rejected"] == 0 and jsonl.cases == csv_cases
    assert jsonl.cases[-1].codes.render() == "71250, 26, R91.1"  # the `codes` column alternative


def test_iter_records_streams(tmp_path):
    path = _write_jsonl(tmp_path / "big.jsonl", [json.dumps(good(i)).encode() for i in range(1000)])
    it = iter_records(path)
    first = next(it)
    assert first[0] == 1 and first[1]["id"] == "c0"
    it.close()  # nothing forced the rest of the file to be parsed


# ----------------------------------------------------------------------------- hostile inputs
def _write_parquet(path: Path, recs: list[dict]) -> Path:
    cols = {k: [r[k] for r in recs] for k in RECORD_FIELDS}
    cols["meta"] = [json.dumps(m) for m in cols["meta"]]
    types = {k: pa.list_(pa.string()) if k in CODE_FIELDS else pa.string() for k in RECORD_FIELDS}
    pq.write_table(pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()}), path)
    return path


def test_jsonl_deep_nesting_huge_integers_and_lone_surrogates_are_rejects(tmp_path):
    nested = "[" * MAX_NESTING + "]" * MAX_NESTING  # MAX_NESTING + 1 levels counting meta's own map
    lines = [json.dumps(good(0)).encode(),
             b"[" * 100_000,
             json.dumps(good(1)).encode().replace(b'"c1"', b"9" * 5000),
             json.dumps(good(2, report_text="Findings \ud800 normal.")).encode(),
             json.dumps(good(3, meta={"m": "x"})).encode().replace(b'"x"', nested.encode()),
             json.dumps(good(4, meta={"n": 1})).encode().replace(b": 1}", b": -" + b"7" * 5000 + b"}"),
             json.dumps(good(5, site="x")).encode().replace(b'"x"', b'{"\\ud800": "y"}'),
             json.dumps(good(6)).encode()]
    result = read_cases(_write_jsonl(tmp_path / "c.jsonl", lines))
    _check(result, {2: ("record", "nested too deeply"), 3: ("id", "integer of 5,000 digits"),
                    4: ("report_text", "lone surrogate '\\ud800'"),
                    5: ("meta", f"nested more than {MAX_NESTING} levels"),
                    6: ("meta", "integer of 5,000 digits"), 7: ("site", "lone surrogate")}, n_good=2)
    assert [r.id for r in result.rejects] == [None, None, "c2", "c3", "c4", "c5"]
    assert read_cases(write_cases(result.cases, tmp_path / "out.jsonl")).cases == result.cases  # writable
    just_deep_enough = json.dumps(good(7, meta={"m": "x"})).encode().replace(b'"x"', nested[1:-1].encode())
    assert read_cases(_write_jsonl(tmp_path / "ok.jsonl", [just_deep_enough])).counts["accepted"] == 1


def test_meta_text_deep_or_huge_or_repeated_is_a_meta_reject(tmp_path):
    metas = ["[" * 100_000, '{"n": ' + "9" * 5000 + "}", "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1),
             '{"a": 1, "a": 2}', '{"s": "\\ud800"}']
    result = read_cases(_write_csv(tmp_path / "c.csv", [good(0)] + [good(i + 1, meta=m) for i, m in enumerate(metas)]))
    _check(result, {3: ("meta", "nested too deeply"), 4: ("meta", "integer of 5,000 digits"),
                    5: ("meta", "nested more than"), 6: ("meta", "key 'a' appears twice"),
                    7: ("meta", "lone surrogate")}, n_good=1)


def test_parquet_with_a_column_twice_is_refused_as_csv_and_queries_are(tmp_path):
    table = pa.table([pa.array(["k1"]), pa.array(["Normal."]), pa.array([["74177"]]), pa.array([["R10.84"]]),
                      pa.array([["Z99.99"]])], names=["id", "report_text", "cpt", "icd", "icd"])
    pq.write_table(table, tmp_path / "twice.parquet")
    with pytest.raises(SourceError, match="column 'icd' twice"):
        read_cases(tmp_path / "twice.parquet")
    # two columns mapped onto one field: each row is rejected, as in CSV and JSONL
    pq.write_table(table.rename_columns(["id", "report_text", "cpt", "dx", "dx2"]), tmp_path / "m.parquet")
    clash = read_cases(source_from_spec(tmp_path / "m.parquet", mapping={"dx": "icd", "dx2": "icd"}))
    assert [(r.field, r.id) for r in clash.rejects] == [("icd", "k1")] and "two columns" in clash.rejects[0].reason


def test_parquet_values_python_cannot_hold_are_rejects(tmp_path):
    n = 3
    table = pa.table({"id": ["p0", "p1", "p2"], "report_text": ["Normal."] * n, "cpt": [["74177"]] * n,
                      "icd": [["R10.84"]] * n,
                      "reviewed_at": pa.array([0, 2**62, 0], type=pa.timestamp("us")),  # year 146,000
                      "meta": pa.array([[("k", "v")], [], [("k", "v"), ("k", "w")]],
                                       type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(table, tmp_path / "v.parquet")
    result = read_cases(tmp_path / "v.parquet")
    _check(result, {2: ("reviewed_at", "cannot hold"), 3: ("meta", "key 'k' appears twice in the map")}, n_good=1)
    assert result.cases[0].meta == {"k": "v"} and result.cases[0].reviewed_at.startswith("1970-01-01")


def test_meta_empty_list_zero_or_false_is_rejected_in_every_format(tmp_path):
    recs = [good(0), good(1, meta=[]), good(2, meta=0), good(3, meta=False)]
    expected = {2: ("meta", "got list"), 3: ("meta", "got int"), 4: ("meta", "got bool")}
    _check(read_cases(_write_jsonl(tmp_path / "c.jsonl", [json.dumps(r).encode() for r in recs])), expected, 1)
    _check(read_cases(_write_csv(tmp_path / "c.csv", recs)), {k + 1: v for k, v in expected.items()}, 1)
    _check(read_cases(_write_parquet(tmp_path / "c.parquet", recs)), expected, 1)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_one_maximum_report_size_in_every_format(tmp_path, ext):
    # 150,000 characters is over the csv module's own field limit (131,072), under MAX_REPORT_CHARS
    recs = [good(0, report_text="x" * 150_000), good(1, report_text="y" * (MAX_REPORT_CHARS + 1)),
            good(2, report_text="z" * MAX_REPORT_CHARS)]
    writers = {"jsonl": lambda p: _write_jsonl(p, [json.dumps(r).encode() for r in recs]),
               "csv": lambda p: _write_csv(p, recs), "parquet": lambda p: _write_parquet(p, recs)}
    result = read_cases(writers[ext](tmp_path / f"long.{ext}"))
    no = 3 if ext == "csv" else 2
    _check(result, {no: ("report_text", f"{MAX_REPORT_CHARS + 1:,} characters, more than the maximum")}, n_good=2)
    assert [len(c.report_text) for c in result.cases] == [150_000, MAX_REPORT_CHARS]


def test_source_errors_are_input_errors(tmp_path):
    assert issubclass(SourceError, InputError) and SourceError("x").exit_code == 3
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_cases(tmp_path / "x.parquet")


# ----------------------------------------------------------------------------- specs and CLI
def test_specs(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        source_from_spec(tmp_path / "missing.jsonl")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(SourceError, match="unknown case file format '.txt'"):
        source_from_spec(tmp_path / "a.txt")
    with pytest.raises(SourceError, match="needs a query"):
        source_from_spec("postgresql://u@localhost/db")
    (tmp_path / "q.sql").write_text("SELECT 1;\n")
    spec = source_from_spec(tmp_path / "q.sql", mapping={"a": "id"})
    assert isinstance(spec, PgSource) and spec.query == "SELECT 1;\n" and spec.dsn is None
    assert source_from_spec(None, query=f"@{tmp_path / 'q.sql'}").query == "SELECT 1;\n"
    assert isinstance(source_from_spec(EXAMPLES / "cases.csv"), FileSource)
    label = PgSource("SELECT 1", dsn="postgresql://bob:s3cret@db.example:5433/cases").label
    assert "s3cret" not in label and "bob@db.example:5433/cases" in label


def test_cli_validate(tmp_path, capsys):
    lines = [json.dumps(good(0)).encode(), json.dumps(good(1, icd=["Z99.99"])).encode()]
    src = _write_jsonl(tmp_path / "c.jsonl", lines)
    rejects = tmp_path / "rej.jsonl"
    assert cli_main(["validate", str(src), "--rejects", str(rejects)]) == 0
    out = capsys.readouterr().out
    assert "invalid ICD-10-CM code 'Z99.99'" in out and "rej.jsonl" in out
    assert json.loads(counts_path_for(rejects).read_text())["rejected"] == 1
    assert cli_main(["validate", str(tmp_path / "missing.csv")]) == 3  # InputError (docs/exit-codes.md)
    assert "missing.csv: no such file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fuzz
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)
FIELD_VALUES = st.fixed_dictionaries({}, optional={k: JSON for k in ("id", "report_text", "cpt", "icd", "modifiers",
                                                                      "codes", "meta", "site", "original_codes")})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(FIELD_VALUES.map(lambda d: json.dumps(d).encode()), st.binary(max_size=20)), max_size=6))
def test_any_line_is_a_case_or_a_reject(tmp_path, lines):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    result = read_cases(_write_jsonl(tmp_path / "fuzz.jsonl", lines))
    records = sum(1 for line in lines if line.strip())
    assert result.counts["read"] == records == result.counts["accepted"] + result.counts["rejected"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=40) | st.text(max_size=40).map(str.encode), max_size=6))
def test_any_csv_row_is_a_case_or_a_reject(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    path.write_bytes(",".join(RECORD_FIELDS).encode() + b"\n" + b"\n".join(rows))
    result = read_cases(path)
    assert result.counts["read"] == result.counts["accepted"] + result.counts["rejected"]
    assert len({r.record_no for r in result.rejects} | {1}) == len(result.rejects) + 1  # distinct, never the header


# any text, lone surrogates and invisible characters included; raw JSON Python cannot read as is
TEXT = st.text(st.characters(exclude_categories=()), max_size=8)
RAW_JSON = st.sampled_from(["9" * 5000, "[" * 5000, "[" * 150 + "]" * 150, '"\\ud800"', '"\\u200b"', "[]", "0",
                            "false", "NaN", "1e999", '["74177"]', '["R10.84"]', '"Normal."', '"c1"'])
VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
RECORD_TEXT = st.dictionaries(st.sampled_from(sorted(FIELDS)) | TEXT, VALUE.map(json.dumps) | RAW_JSON, max_size=8).map(
    lambda d: "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in d.items()) + "}")
HOSTILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


def _reads_or_refuses(path: Path, may_refuse: bool = True) -> None:
    """read_cases returns counts that reconcile, or refuses the whole source with an InputError."""
    try:
        result = read_cases(path, rejects_path=path.with_suffix(".rejects.jsonl"), progress=False)
    except InputError:
        assert may_refuse
        return
    c = result.counts
    assert c["read"] == c["accepted"] + c["rejected"] == len(result.cases) + len(result.rejects)
    for ext in ("jsonl", "csv", "parquet"):  # what is accepted can be written (build-data writes it)
        again = read_cases(write_cases(result.cases, path.with_name(f"again.{ext}")), progress=False)
        assert again.counts["accepted"] == len(result.cases), again.rejects[:1]
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # printing the summary must not fail either
    from rich.console import Console
    for table in summary_tables(result):
        Console(file=out).print(table)
    out.flush()


@HOSTILE
@given(st.lists(RECORD_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=30), max_size=5))
def test_hostile_jsonl_never_raises(tmp_path, lines):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    _reads_or_refuses(_write_jsonl(tmp_path / "h.jsonl", lines), may_refuse=False)


@HOSTILE
@given(st.lists(st.sampled_from(RECORD_FIELDS) | TEXT, min_size=1, max_size=6, unique=True),
       st.lists(st.lists(TEXT | RAW_JSON, max_size=7), max_size=4), st.binary(max_size=30))
def test_hostile_csv_never_raises(tmp_path, header, rows, tail):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    path = tmp_path / "h.csv"
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass") + tail)
    _reads_or_refuses(path)


@HOSTILE
@given(st.lists(st.dictionaries(st.sampled_from(["id", "report_text", "cpt", "icd", "meta", "site", "x"]),
                                VALUE | st.just(["74177"]) | st.just(["R10.84"]), max_size=6), max_size=4),
       st.binary(max_size=20))
def test_hostile_parquet_never_raises(tmp_path, records, noise):
    path = tmp_path / "h.parquet"
    buf = io.BytesIO()
    try:
        pq.write_table(pa.Table.from_pylist(records), buf)
    except (pa.ArrowException, UnicodeError, OverflowError):  # records Arrow cannot store: the noise still is
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": ["c1"]}), buf)
    data = buf.getvalue()
    path.write_bytes(data if not noise else data[: len(data) // 2] + noise + data[len(data) // 2:])
    _reads_or_refuses(path)


# ----------------------------------------------------------------------------- PostgreSQL
PG_ROWS = [  # (case_id, exam, why, body, cpt_codes, mods, icd_codes, meta, exam_date, payload)
    ("pg1", "CT abdomen", "pain", "Findings: diverticulosis.", ["74177"], ["26"], ["R10.84"], {"modality": "CT"}, "2025-01-03"),
    ("pg2", "MRI knee", "pain", "Findings: effusion.", ["73721"], ["RT", "26"], ["M25.561"], None, None),
    ("pg3", "Duplex", "varicose", "Findings: varicose veins.", ["93970"], [], ["I83.93"], {}, "2025-01-04"),
    ("pg4", "CT chest", "nodule", "Findings: nodule.", ["71250"], ["26"], ["Z99.99"], None, None),  # invalid ICD
    ("pg5", "CT chest", "nodule", "   ", ["71250"], ["26"], ["R91.1"], None, None),  # empty report
    ("pg1", "CT abdomen", "pain", "Findings: again.", ["74177"], ["26"], ["R10.84"], None, None),  # duplicate id
    ("pg7", "XR", "cough", "Findings: pneumonia.", ["7104"], ["26"], ["J18.9"], None, None),  # bad CPT shape
    ("pg8", "XR", "cough", "Findings: pneumonia.", ["71046"], ["26"], ["J18.9"], None, "2025-01-05"),
]
PG_MAP = ["case_id=id", "exam=exam_description", "why=reason_for_exam", "body=report_text", "cpt_codes=cpt",
          "mods=modifiers", "icd_codes=icd"]


@pytest.fixture
def pg_table(pg_dsn):
    """A real table (not TEMP: the reader opens its own connection), dropped afterwards."""
    import psycopg
    from psycopg.types.json import Jsonb

    name = f"nyxmed_test_cases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (n serial, case_id text, exam text, why text, body text, cpt_codes text[], "
                     "mods text[], icd_codes text[], meta jsonb, exam_date date)")
        for r in PG_ROWS:
            conn.execute(f"INSERT INTO {name} (case_id, exam, why, body, cpt_codes, mods, icd_codes, meta, exam_date) "
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", (*r[:7], Jsonb(r[7]) if r[7] is not None else None, r[8]))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.mark.postgres
def test_postgres_query_with_mapping_streams_in_batches(pg_dsn, pg_table, tmp_path, monkeypatch):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    fetched: list[int] = []
    real_fetchmany = psycopg.ServerCursor.fetchmany

    def spy(self, size=0):
        rows = real_fetchmany(self, size)
        fetched.append(len(rows))
        return rows

    monkeypatch.setattr(psycopg.ServerCursor, "fetchmany", spy)
    query = f"SELECT case_id, exam, why, body, cpt_codes, mods, icd_codes, meta, exam_date FROM {pg_table} ORDER BY n"
    src = source_from_spec(pg_dsn, query=query, mapping=parse_mapping(PG_MAP), batch_size=3)
    result = read_cases(src, rejects_path=tmp_path / "rejects.jsonl")
    assert fetched == [3, 3, 2, 0]  # server-side cursor: 8 rows in batches of 3
    assert [c.id for c in result.cases] == ["pg1", "pg2", "pg3", "pg8"]
    assert result.cases[0].exam_date == "2025-01-03" and result.cases[0].meta == {"modality": "CT"}
    assert result.cases[1].codes.render() == "73721, RT 26, M25.561"
    got = {(r.record_no, r.id, r.field) for r in result.rejects}
    assert got == {(4, "pg4", "icd"), (5, "pg5", "report_text"), (6, "pg1", "id"), (7, "pg7", "cpt")}
    counts = json.loads((tmp_path / "rejects.counts.json").read_text())
    assert (counts["read"], counts["accepted"], counts["rejected"]) == (8, 4, 4)
    password = conninfo_to_dict(pg_dsn).get("password")
    assert not password or f":{password}@" not in json.dumps(counts)  # no password in artifacts


@pytest.mark.postgres
def test_postgres_env_dsn_cli_and_errors(pg_dsn, pg_table, monkeypatch, capsys):
    monkeypatch.setenv("NYXMED_PG_DSN", pg_dsn)
    query = f"SELECT case_id AS id, body AS report_text, cpt_codes AS cpt, icd_codes AS icd FROM {pg_table} ORDER BY n"
    assert cli_main(["validate", "--query", query]) == 0
    out = capsys.readouterr().out
    assert "invalid ICD-10-CM code 'Z99.99'" in out and "duplicate id 'pg1'" in out
    assert cli_main(["validate", "--query", f"SELECT nope FROM {pg_table}"]) == 3  # InputError (docs/exit-codes.md)
    assert "query failed" in capsys.readouterr().err
    with pytest.raises(SourceError, match="column 'case_id' twice"):
        read_cases(PgSource(f"SELECT case_id, case_id FROM {pg_table}"))
    with pytest.raises(SourceError, match="cannot connect"):
        read_cases(PgSource("SELECT 1", dsn="postgresql://nobody:x@127.0.0.1:1/none"))


def test_licensed_cpt_table_makes_cpt_strict(tmp_path, capsys):
    table = tmp_path / "cpt.csv"
    table.write_text("code,description\n74177,CT abd & pelvis w/contrast\n")
    src = _write_jsonl(tmp_path / "c.jsonl", [json.dumps(good(0)).encode(), json.dumps(good(1, cpt=["74176"])).encode()])
    assert cli_main(["validate", str(src), "--cpt-table", str(table), "--rejects", str(tmp_path / "r.jsonl")]) == 0
    (reject,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (reject["id"], reject["field"]) == ("c1", "cpt") and "'74176' not in the licensed table" in reject["reason"]
    assert cli_main(["validate", str(src), "--cpt-table", str(tmp_path / "none.csv")]) == 4  # NotFound (docs/exit-codes.md)
    assert "--cpt-table" in capsys.readouterr().err


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_synthetic_cases_round_trip(tmp_path, ext):
    from nyxmed.synth import generate_cases

    cases = generate_cases(60, seed=5)
    result = read_cases(write_cases(cases, tmp_path / f"synth.{ext}"))
    assert result.rejects == [] and result.cases == cases
