"""Case sources: JSONL, CSV, Parquet files and PostgreSQL queries, read with rejects.

Every reader yields raw records by number; :func:`read_cases` validates them with
:func:`nyxmed.cases.case_from_record` and returns the accepted cases, the rejects (each with a
reason naming the field) and counts that reconcile: ``read == accepted + rejected``.
The layout is documented in docs/data-format.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tqdm.auto import tqdm

from nyxmed.cases import (CODE_FIELDS, META_FIELDS, TEXT_FIELDS, Case, InvalidCase, case_from_record,
                          report_case_from_record)
from nyxmed.codes.cpt import CptTable
from nyxmed.errors import InputError
from nyxmed.io import write_atomic

RECORD_FIELDS: tuple[str, ...] = ("id", *TEXT_FIELDS, *CODE_FIELDS, "original_codes", *META_FIELDS, "meta")
FIELDS: frozenset[str] = frozenset((*RECORD_FIELDS, "codes"))  # `codes` replaces cpt/modifiers/icd
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PG_SCHEMES = ("postgresql://", "postgres://")
DSN_ENV = "NYXMED_PG_DSN"
RECORD = "record"  # the field named by a reject that concerns the whole line or row
MAX_NESTING = 100  # lists and maps inside a value, at most: deeper ones are rejected, never recursed into
# the csv module's own limit (131,072 characters) would reject long fields that JSONL accepts;
# the schema's limits (MAX_REPORT_CHARS) apply to every format instead
CSV_FIELD_LIMIT = 2**31 - 1


class SourceError(InputError):
    """An unusable source (missing file, unknown format, failed query): nothing can be read."""


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class FileSource:
    """A case file; ``format`` is ``jsonl``, ``csv`` or ``parquet``; ``mapping`` renames columns."""

    path: Path
    format: str
    mapping: Mapping[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class PgSource:
    """A PostgreSQL query read through a server-side cursor in batches of ``batch_size`` rows.

    ``dsn`` None means ``$NYXMED_PG_DSN``; ``mapping`` maps result columns to case fields.
    """

    query: str
    dsn: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    batch_size: int = 1000

    def resolved_dsn(self) -> str:
        dsn = self.dsn or os.environ.get(DSN_ENV)
        if not dsn:
            raise SourceError(f"no PostgreSQL connection string: give postgresql://... or set {DSN_ENV}")
        return dsn

    @property
    def label(self) -> str:
        """Server and query, never the password."""
        try:
            from psycopg.conninfo import conninfo_to_dict

            info = conninfo_to_dict(self.resolved_dsn())
            where = f"postgresql://{info.get('user', '')}@{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        except Exception:  # a label must not fail; the connection reports the real error
            where = "postgresql"
        query = " ".join(self.query.split())
        return f"{where} [{query[:80]}{'...' if len(query) > 80 else ''}]"


Source = FileSource | PgSource


def parse_mapping(items: Iterable[str]) -> dict[str, str]:
    """``["exam=exam_description", ...]`` -> ``{"exam": "exam_description"}``; fields are checked."""
    mapping: dict[str, str] = {}
    for item in items:
        col, sep, target = item.partition("=")
        if not sep or not col.strip() or not target.strip():
            raise SourceError(f"column mapping {item!r} is not column=field")
        mapping[col.strip()] = target.strip()
    _check_mapping(mapping)
    return mapping


def _check_mapping(mapping: Mapping[str, str]) -> None:
    unknown = sorted(t for t in mapping.values() if t not in FIELDS)
    if unknown:
        raise SourceError(f"column mapping targets unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")


def source_from_spec(spec: str | os.PathLike | Source | None, query: str | None = None,
                     mapping: Mapping[str, str] | None = None, batch_size: int = 1000) -> Source:
    """Resolve a source spec: a file path (format by extension), ``postgresql://...`` with ``query``,
    a ``.sql`` file (its query, run against ``$NYXMED_PG_DSN``), or None with ``query`` (same DSN).

    ``query`` may be ``@path.sql``. Raises :class:`SourceError` on an unusable spec.
    """
    if isinstance(spec, (FileSource, PgSource)):
        return spec
    mapping = dict(mapping or {})
    _check_mapping(mapping)
    if query is not None and query.startswith("@"):
        query = _read_sql(Path(query[1:]))
    text = None if spec is None else str(spec)
    if text is None or text.startswith(PG_SCHEMES):
        if not query or not query.strip():
            raise SourceError("a PostgreSQL source needs a query (--query 'SELECT ...' or --query @file.sql)")
        return PgSource(query=query, dsn=text, mapping=mapping, batch_size=batch_size)
    path = Path(text)
    if path.suffix.lower() == ".sql":
        return PgSource(query=_read_sql(path), dsn=None, mapping=mapping, batch_size=batch_size)
    if query is not None:
        raise SourceError(f"--query applies to PostgreSQL sources, not to the file {text}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(f"{text}: unknown case file format {path.suffix!r} (known: {', '.join(sorted(FORMATS))}, .sql)")
    if not path.is_file():
        raise SourceError(f"{text}: no such file")
    return FileSource(path=path, format=fmt, mapping=mapping)


def _read_sql(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the query: {exc}") from exc


# ----------------------------------------------------------------------------- raw records
@dataclass(frozen=True)
class RecordError:
    """A record that could not be turned into a raw map (bad JSON, bad bytes, wrong row shape)."""

    field: str
    reason: str
    record_id: str | None = None


def iter_records(source: str | os.PathLike | Source) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Stream ``(record_no, raw map | RecordError)``: record_no is the line in JSONL/CSV files
    (CSV header = line 1), the 1-based row in Parquet and PostgreSQL. Blank lines are not records.
    """
    src = source_from_spec(source)
    readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
    rows = _pg_rows(src) if isinstance(src, PgSource) else readers[src.format](src.path)
    for record_no, item in rows:
        yield record_no, item if isinstance(item, RecordError) else _plain_record(item, src.mapping)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | RecordError]]:
    with _open_binary(path) as fh:
        for lineno, data in enumerate(fh, start=1):
            if not data.strip():
                continue
            # surrogateescape keeps undecodable bytes as markers, so the reject can name the field
            text = data.decode("utf-8", errors="surrogateescape")
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            try:
                obj = _loads(text)
            except _BadJson as exc:
                if exc.key is not None:
                    yield lineno, RecordError(RECORD if _text_problem(exc.key) else exc.key, exc.detail)
                elif _has_bad_bytes(text):
                    yield lineno, RecordError(RECORD, f"undecodable bytes (not UTF-8) at byte {_bad_byte_offset(data)}")
                else:
                    yield lineno, RecordError(RECORD, f"bad JSON: {exc.detail}")
                continue
            if not isinstance(obj, dict):
                yield lineno, RecordError(RECORD, f"wrong type: expected a JSON object, got {type(obj).__name__}")
                continue
            yield lineno, obj


class _BadJson(ValueError):
    """JSON text that json cannot read, or would read wrongly; ``key`` is set for a repeated key."""

    def __init__(self, detail: str, key: str | None = None):
        self.detail, self.key = detail, key
        super().__init__(detail)


@dataclass(frozen=True)
class _Unreadable:
    """A value a reader could not turn into Python (a huge integer, a date past 9999): rejected by field."""

    reason: str


def _loads(text: str) -> Any:
    """``json.loads`` that refuses repeated keys and nesting too deep for Python; raises :class:`_BadJson`."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise _BadJson(f"{exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise _BadJson(f"nested too deeply (more than {MAX_NESTING} levels)") from None


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:  # json would keep the last value silently
            raise _BadJson(f"key {key!r} appears twice in the object", key)
        obj[key] = value
    return obj


def _json_int(digits: str) -> int | _Unreadable:
    try:
        return int(digits)
    except ValueError:  # Python's limit on int from text (sys.set_int_max_str_digits)
        return _Unreadable(f"an integer of {len(digits.lstrip('-')):,} digits, more than the "
                           f"{sys.get_int_max_str_digits():,} Python reads")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | RecordError]]:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise SourceError(f"{path}: unreadable CSV header: {exc}") from exc
        if header is None:
            return
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes or "" in header or any(_has_bad_bytes(h) for h in header):
            raise SourceError(f"{path}: bad CSV header {header!r}: columns must be named, UTF-8 and unique")
        line = reader.line_num
        while True:
            start = line + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = reader.line_num
                yield start, RecordError(RECORD, f"bad CSV row: {exc}")
                continue
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                yield start, RecordError(RECORD, f"wrong number of fields: {len(row)}, the header has {len(header)}")
                continue
            yield start, dict(zip(header, row))


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict | RecordError]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {exc}") from exc
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:  # a row as a map would keep the last of them silently
        raise SourceError(f"{path}: the Parquet file has column {repeated[0]!r} twice; columns must be unique")
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            columns = [_column_values(batch.column(i)) for i in range(batch.num_columns)]
            for values in zip(*columns) if columns else [()] * batch.num_rows:
                n += 1
                yield n, dict(zip(names, values))
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: Parquet data unreadable after row {n}: {exc}") from exc


def _column_values(column: Any) -> list[Any]:
    """One Arrow column as Python values: maps become dicts, a value Python cannot hold :class:`_Unreadable`."""
    import pyarrow as pa

    try:
        values = column.to_pylist()
    except (ArithmeticError, ValueError):  # e.g. a timestamp past year 9999: find which rows
        values = []
        for i in range(len(column)):
            try:
                values.append(column[i].as_py())
            except (ArithmeticError, ValueError) as exc:
                values.append(_Unreadable(f"a {column.type} value Python cannot hold: {exc}"))
    if pa.types.is_map(column.type):  # Arrow gives a map as (key, value) pairs
        values = [v if v is None else _map_from_pairs(v) for v in values]
    return values


def _map_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | _Unreadable:
    out: dict[Any, Any] = {}
    for key, value in pairs:
        if key in out:  # as in a JSON object: never keep the last silently
            return _Unreadable(f"key {key!r} appears twice in the map")
        out[key] = value
    return out


def _pg_rows(src: PgSource) -> Iterator[tuple[int, dict | RecordError]]:
    import psycopg

    query = src.query.strip().rstrip(";").strip()
    try:
        conn = psycopg.connect(src.resolved_dsn(), connect_timeout=10)
    except psycopg.Error as exc:
        raise SourceError(f"{src.label}: cannot connect: {exc}") from exc
    with conn:
        # a named cursor lives on the server: rows arrive batch by batch, never all at once
        with conn.cursor(name="nyxmed_cases") as cur:
            try:
                cur.execute(query)
            except psycopg.Error as exc:
                raise SourceError(f"{src.label}: query failed: {exc}") from exc
            columns = [d.name for d in cur.description or ()]
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                raise SourceError(f"{src.label}: the query returns column {repeated[0]!r} twice; alias one of them")
            n = 0
            while rows := cur.fetchmany(src.batch_size):
                for row in rows:
                    n += 1
                    yield n, dict(zip(columns, row))


def _open_binary(path: Path):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc}") from exc


def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc}") from exc


_BAD_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8
_SURROGATE = re.compile("[\ud800-\udfff]")  # no UTF-8 can hold one: writing it would fail


def _has_bad_bytes(text: str) -> bool:
    return _BAD_BYTE.search(text) is not None


def _text_problem(text: str) -> str | None:
    """Why ``text`` is not Unicode that can be written: undecodable bytes or a lone surrogate (``"\\ud800"``)."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    if _has_bad_bytes(found.group()):
        return "undecodable bytes (not UTF-8)"
    return f"lone surrogate {found.group()!r} (not valid Unicode text)"


def _value_problem(value: Any) -> str | None:
    """Why a field's value cannot be part of a case (bad text anywhere inside, too deep, unreadable), or None."""
    stack = [(value, 0)]
    while stack:  # a loop, not recursion: the value may be nested deeper than Python recurses
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
        elif isinstance(item, _Unreadable):
            problem = item.reason
        elif isinstance(item, (list, tuple, dict)):
            if depth == MAX_NESTING:
                return f"nested more than {MAX_NESTING} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
            continue
        else:
            continue
        if problem:
            return problem
    return None


def _bad_byte_offset(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return -1


def _plain_record(raw: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any] | RecordError:
    """Rename columns, decode bytes, dates to ISO text, ``meta`` JSON text to a map."""
    out: dict[str, Any] = {}
    for col, value in raw.items():
        name = mapping.get(col, col)
        problem = _text_problem(name)
        if problem:
            return RecordError(RECORD, f"{problem} in a column name", _raw_id(raw, mapping))
        if type(value) is not str:  # text, the common case, needs only the check below
            if isinstance(value, (bytes, bytearray, memoryview)):
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError as exc:
                    return RecordError(name, f"undecodable bytes (not UTF-8) at byte {exc.start}", _raw_id(raw, mapping))
            elif isinstance(value, (dt.date, dt.datetime, dt.time)):
                value = value.isoformat()
        problem = _value_problem(value)
        if problem:
            return RecordError(name, problem, _raw_id(raw, mapping))
        if name in out:
            return RecordError(name, f"two columns give field {name!r} (check the column mapping)", _raw_id(raw, mapping))
        out[name] = value
    meta = out.get("meta")
    if isinstance(meta, str):
        try:
            out["meta"] = _loads(meta) if meta.strip() else {}
        except _BadJson as exc:
            return RecordError("meta", f"bad JSON in meta: {exc.detail}", _raw_id(raw, mapping))
        problem = _value_problem(out["meta"])
        if problem:
            return RecordError("meta", problem, _raw_id(raw, mapping))
    return out


def _raw_id(raw: Mapping[str, Any], mapping: Mapping[str, str]) -> str | None:
    for col, value in raw.items():
        if mapping.get(col, col) == "id" and isinstance(value, (str, int)) and not isinstance(value, bool):
            text = str(value).strip()
            return text if text and not _text_problem(text) else None
    return None


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class Reject:
    """One rejected record: where it was, its id if it had one, the field and the reason."""

    source: str
    record_no: int
    id: str | None
    field: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReadResult:
    """Accepted cases, rejects, and counts where ``read == accepted + rejected``."""

    cases: list[Case]
    rejects: list[Reject]
    counts: dict[str, Any]


def read_cases(source: str | os.PathLike | Source, cpt_table: CptTable | None = None,
               rejects_path: str | os.PathLike | None = None, progress: bool | None = None,
               reports_only: bool = False) -> ReadResult:
    """Read and validate every record of ``source``; rejects (and their counts) go to ``rejects_path``.

    ``reports_only`` reads reports to code (no gold codes; any present are ignored). Raises
    :class:`SourceError` only when the source as a whole is unusable.
    """
    src = source_from_spec(source)
    cases: list[Case] = []
    rejects: list[Reject] = []
    accepted_ids: dict[str, int] = {}
    ignored: dict[str, int] = {}
    read = 0
    bar = tqdm(iter_records(src), desc=f"reading {Path(src.label).name if isinstance(src, FileSource) else 'query'}",
               unit="rec", disable=True if progress is False else None, file=sys.stderr)
    for record_no, raw in bar:
        read += 1
        if isinstance(raw, RecordError):
            rejects.append(Reject(src.label, record_no, raw.record_id, raw.field, raw.reason))
            continue
        for col in raw:
            if col not in FIELDS:
                ignored[col] = ignored.get(col, 0) + 1
        try:
            case = report_case_from_record(raw) if reports_only else case_from_record(raw, cpt_table)
        except InvalidCase as exc:
            rejects.append(Reject(src.label, record_no, exc.record_id, exc.field, exc.reason))
            continue
        if case.id in accepted_ids:
            rejects.append(Reject(src.label, record_no, case.id, "id",
                                  f"duplicate id {case.id!r} (accepted at record {accepted_ids[case.id]})"))
            continue
        accepted_ids[case.id] = record_no
        cases.append(case)
    counts = _counts(src, read, cases, rejects, ignored)
    if rejects_path is not None:
        write_rejects(rejects, counts, rejects_path)
    return ReadResult(cases, rejects, counts)


def _counts(src: Source, read: int, cases: list[Case], rejects: list[Reject], ignored: dict[str, int]) -> dict[str, Any]:
    if read != len(cases) + len(rejects):  # an invariant: a record lost here would be a bug
        raise AssertionError(f"{src.label}: read {read} != accepted {len(cases)} + rejected {len(rejects)}")
    by_field: dict[str, int] = {}
    for r in rejects:
        by_field[r.field] = by_field.get(r.field, 0) + 1
    return {"source": src.label, "read": read, "accepted": len(cases), "rejected": len(rejects),
            "rejected_by_field": dict(sorted(by_field.items())), "ignored_columns": dict(sorted(ignored.items()))}


def counts_path_for(rejects_path: str | os.PathLike) -> Path:
    """``out/rejects.jsonl`` -> ``out/rejects.counts.json``."""
    p = Path(rejects_path)
    return p.with_name(f"{p.name.removesuffix(p.suffix) if p.suffix else p.name}.counts.json")


def write_rejects(rejects: list[Reject], counts: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The reject file (JSONL, one reject a line) and its counts beside it, both atomically."""
    # ASCII escapes: a reason quotes the bad value, whatever it holds
    write_atomic(path, "".join(json.dumps(r.to_dict()) + "\n" for r in rejects))
    write_atomic(counts_path_for(path), json.dumps(dict(counts), indent=2) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------- writing
def write_cases(cases: Iterable[Case], path: str | os.PathLike) -> Path:
    """Write cases as JSONL, CSV or Parquet (by extension), atomically; :func:`read_cases` reads them back."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(f"{path}: unknown case file format {path.suffix!r} (known: {', '.join(sorted(FORMATS))})")
    records = [c.to_record() for c in cases]
    if fmt == "jsonl":
        return write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({k: _csv_value(k, r[k]) for k in RECORD_FIELDS})
        return write_atomic(path, buf.getvalue())
    return write_atomic(path, _parquet_bytes(records))


def _csv_value(name: str, value: Any) -> str:
    if name in CODE_FIELDS:
        return " ".join(value)
    if name == "meta":
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return "" if value is None else str(value)


def _parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(k, pa.list_(pa.string()) if k in CODE_FIELDS else pa.string()) for k in RECORD_FIELDS])
    columns = {k: [r[k] for r in records] for k in RECORD_FIELDS}
    # meta is free-form, so Parquet stores it as JSON text, as CSV does
    columns["meta"] = [json.dumps(m, ensure_ascii=False, sort_keys=True) if m else None for m in columns["meta"]]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reporting
def summary_tables(result: ReadResult, show: int = 20) -> list[Any]:
    """Rich tables: the counts (read = accepted + rejected), then the first ``show`` rejects."""
    from rich.table import Table

    c = result.counts
    counts = Table(title=f"{c['source']}")
    for name in ("read", "accepted", "rejected"):
        counts.add_column(name, justify="right")
    counts.add_column("rejected by field")
    counts.add_column("ignored columns")
    counts.add_row(str(c["read"]), str(c["accepted"]), str(c["rejected"]),
                   ", ".join(f"{k}: {v}" for k, v in c["rejected_by_field"].items()) or "-",
                   ", ".join(f"{k}: {v}" for k, v in c["ignored_columns"].items()) or "-")
    tables = [counts]
    if result.rejects and show > 0:
        more = len(result.rejects) - show
        rej = Table(title="rejects" + (f" (first {show}; {more} more in the reject file)" if more > 0 else ""))
        for name in ("record", "id", "field", "reason"):
            rej.add_column(name, overflow="fold")
        for r in result.rejects[:show]:
            rej.add_row(str(r.record_no), r.id or "-", r.field, r.reason)
        tables.append(rej)
    return tables
