"""The case schema: one coder-reviewed radiology exam with its gold code line, and validation."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from nyxmed.codeline import CodeLine, parse
from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm
from nyxmed.codes import modifiers as mod_codes
from nyxmed.errors import InputError

TEXT_FIELDS = ("exam_description", "reason_for_exam", "report_text")
META_FIELDS = ("patient_key", "accession", "exam_date", "site", "reviewed_at")
CODE_FIELDS = ("cpt", "modifiers", "icd")
# the longest exam description, reason or report accepted, in characters, whatever the file format
MAX_REPORT_CHARS = 200_000


class InvalidCase(InputError):
    """A record that fails the schema; names the record, the field and the reason."""

    def __init__(self, record_id: str | None, field_name: str, reason: str):
        self.record_id, self.field, self.reason = record_id, field_name, reason
        super().__init__(f"record {record_id!r}: field {field_name!r}: {reason}")


@dataclass(frozen=True)
class Case:
    id: str
    exam_description: str
    reason_for_exam: str
    report_text: str
    codes: CodeLine
    original_codes: CodeLine | None = None
    patient_key: str | None = None
    accession: str | None = None
    exam_date: str | None = None
    site: str | None = None
    reviewed_at: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the normalized report (exam, reason, body): identical reports share it."""
        return content_hash(" ".join((self.exam_description, self.reason_for_exam, self.report_text)))

    def record_hash(self) -> str:
        """SHA-256 of the whole record (text and gold codes): changes whenever the record does."""
        return hashlib.sha256(repr((self.id, self.content_hash, self.codes.render())).encode()).hexdigest()

    def to_record(self) -> dict[str, Any]:
        """The file layout of docs/data-format.md (lists for code fields)."""
        rec: dict[str, Any] = {"id": self.id, **{f: getattr(self, f) for f in TEXT_FIELDS}, **self.codes.to_dict()}
        rec["original_codes"] = self.original_codes.render() if self.original_codes else None
        rec.update({f: getattr(self, f) for f in META_FIELDS})
        rec["meta"] = dict(self.meta)
        return rec

    def with_codes(self, codes: CodeLine) -> "Case":
        return replace(self, codes=codes)


def normalize_text(text: str) -> str:
    """Lower case, single spaces, no punctuation: the form hashed for duplicate detection."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def content_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode()).hexdigest()


def _invisible(text: str) -> bool:
    """Only whitespace and format characters (Unicode Cf: zero-width space, BOM, LRM...), or nothing."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def _text(raw: Mapping[str, Any], name: str, rid: str | None, required: bool = True) -> str:
    value = raw.get(name)
    if value is None or (isinstance(value, float) and value != value):
        value = ""
    if not isinstance(value, str):
        raise InvalidCase(rid, name, f"expected text, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise InvalidCase(rid, name, "missing or empty")
    if required and _invisible(value):
        raise InvalidCase(rid, name, f"blank: only invisible format characters {value[:8]!r}")
    if len(value) > MAX_REPORT_CHARS:
        raise InvalidCase(rid, name, f"{len(value):,} characters, more than the maximum {MAX_REPORT_CHARS:,}")
    return value


def _opt(raw: Mapping[str, Any], name: str, rid: str | None = None) -> str | None:
    value = raw.get(name)
    if value is None or (isinstance(value, float) and value != value):
        return None
    # scalars only: str() of a map, a list or raw bytes would pass as text
    if isinstance(value, (Mapping, list, tuple, set, bytes, bool)):
        raise InvalidCase(rid, name, f"expected text, got {type(value).__name__}")
    text = str(value).strip()
    return None if _invisible(text) else text


def _code_list(raw: Mapping[str, Any], name: str, rid: str | None) -> Any:
    """A code field as stored: a list of codes or a space-separated string (CSV)."""
    value = raw.get(name)
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, (list, tuple)):
        raise InvalidCase(rid, name, f"expected a list of codes or a space-separated string, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise InvalidCase(rid, name, f"expected codes as text, got {type(item).__name__} {item!r}")
    return value


def _blank(value: Any) -> bool:
    """None, NaN (a spreadsheet's empty cell), blank text or an empty list."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, (list, tuple)) and len(value) == 0


def _parse_line(raw: Mapping[str, Any], name: str, rid: str | None) -> CodeLine:
    """A rendered code line field (``codes``, ``original_codes``): every token must be a code."""
    value = raw[name]
    if not isinstance(value, str):
        raise InvalidCase(rid, name, f"expected a code line as text, got {type(value).__name__}")
    result = parse(value)
    if not result.ok:
        raise InvalidCase(rid, name, f"cannot parse code line {value!r}")
    if result.dropped:
        raise InvalidCase(rid, name, f"not codes {list(result.dropped)!r} in code line {value!r}")
    return result.line


def _codes(raw: Mapping[str, Any], rid: str | None, cpt_table: cpt_codes.CptTable) -> CodeLine:
    fields_given = not all(_blank(raw.get(k)) for k in CODE_FIELDS)
    src = None
    if fields_given:
        line = CodeLine.of(*(_code_list(raw, k, rid) for k in CODE_FIELDS))
        if not _blank(raw.get("codes")) and _parse_line(raw, "codes", rid) != line:
            raise InvalidCase(rid, "codes", f"code line {raw['codes']!r} disagrees with the cpt/modifiers/icd "
                                            f"fields {line.render()!r}")
    elif not _blank(raw.get("codes")):
        line, src = _parse_line(raw, "codes", rid), "codes"
    else:
        line = CodeLine()
    if not line.cpt:
        raise InvalidCase(rid, src or "cpt", "at least one CPT code is required")
    if not line.icd:
        raise InvalidCase(rid, src or "icd", "at least one ICD-10-CM code is required")
    for c in line.cpt:
        if cpt_codes.kind(c) is None:
            raise InvalidCase(rid, src or "cpt", f"bad CPT/HCPCS shape {c!r}")
        if not cpt_table.is_valid(c):
            raise InvalidCase(rid, src or "cpt", f"CPT code {c!r} not in the licensed table {cpt_table.source}")
    for m in line.modifiers:
        if not mod_codes.looks_like_modifier(m):
            raise InvalidCase(rid, src or "modifiers", f"bad modifier {m!r}")
    for i in line.icd:
        if not icd10cm.is_valid(i):
            raise InvalidCase(rid, src or "icd", f"invalid ICD-10-CM code {i!r}")
    return line


def _meta(raw: Mapping[str, Any], rid: str | None) -> dict[str, Any]:
    """``meta`` as a map: absent (None, NaN) is empty; anything else must be a map that JSON can hold."""
    meta = raw.get("meta")
    if meta is None or (isinstance(meta, float) and meta != meta):
        return {}
    if not isinstance(meta, Mapping):  # [] or 0 or false is a wrong value, not an absent one
        raise InvalidCase(rid, "meta", f"expected a map, got {type(meta).__name__} {meta!r:.40}")
    try:  # every written format stores meta as JSON
        json.dumps(meta)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidCase(rid, "meta", f"not JSON: {exc}") from None
    return dict(meta)


def case_from_record(raw: Mapping[str, Any], cpt_table: cpt_codes.CptTable | None = None) -> Case:
    """Validate one raw record (file layout) into a :class:`Case`; raises :class:`InvalidCase`."""
    table = cpt_table or cpt_codes.CptTable()
    case = report_case_from_record(raw)
    codes = _codes(raw, case.id, table)
    original = None
    if _opt(raw, "original_codes", case.id):
        original = _parse_line(raw, "original_codes", case.id)
    return replace(case, codes=codes, original_codes=original)


def report_case_from_record(raw: Mapping[str, Any]) -> Case:
    """A report to code (id, report_text, optional exam fields, meta) as a :class:`Case` without codes.

    Validated as :func:`case_from_record` validates those fields; gold codes, when present, are ignored.
    """
    rid = _opt(raw, "id")
    if rid is None:
        raise InvalidCase(None, "id", "missing or empty")
    texts = {name: _text(raw, name, rid, required=(name == "report_text")) for name in TEXT_FIELDS}
    meta = _meta(raw, rid)
    return Case(id=rid, **texts, codes=CodeLine(), **{f: _opt(raw, f, rid) for f in META_FIELDS}, meta=dict(meta))
