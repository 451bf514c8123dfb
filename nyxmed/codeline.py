"""The code line: the one answer format of the model and the only parser of model output.

A line is ``CPT[ CPT2], MOD[ MOD2], ICD1, ICD2, ...``; the modifier slot may be empty
(``74176, , R10.84``). :func:`parse` never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm, modifiers as mod_codes

_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>")
_FENCE = re.compile(r"```[a-zA-Z]*")
_LABEL = re.compile(r"^\s*(?:final\s+)?(?:codes?|answer|code\s*line|billing\s+codes?)\s*[:\-]\s*", re.I)
_SPLIT_TOKENS = re.compile(r"[\s;/|]+")


@dataclass(frozen=True)
class CodeLine:
    """Procedures (first is primary), modifiers, and diagnoses in clinical priority order."""

    cpt: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    icd: tuple[str, ...] = ()

    @classmethod
    def of(cls, cpt=(), modifiers=(), icd=()) -> "CodeLine":
        """Build a normalized line (ICD with dot, upper case; duplicates dropped in order)."""
        return cls(
            _dedupe(cpt_codes.normalize(c) for c in _as_list(cpt)),
            _dedupe(mod_codes.normalize(m) for m in _as_list(modifiers)),
            _dedupe(icd10cm.normalize(i) for i in _as_list(icd)),
        )

    @property
    def is_empty(self) -> bool:
        return not (self.cpt or self.modifiers or self.icd)

    def render(self) -> str:
        """Canonical text: ``93970, 26, M79.89, I83.93``; empty modifier slot kept."""
        return ", ".join([" ".join(self.cpt), " ".join(self.modifiers), *self.icd])

    def invalid_codes(self, cpt_table: cpt_codes.CptTable | None = None) -> list[str]:
        """Codes of this line that fail the code systems (shape, table, release)."""
        table = cpt_table or cpt_codes.CptTable()
        bad = [c for c in self.cpt if not table.is_valid(c)]
        bad += [m for m in self.modifiers if not mod_codes.looks_like_modifier(m)]
        bad += [i for i in self.icd if not icd10cm.is_valid(i)]
        return bad

    def to_dict(self) -> dict[str, list[str]]:
        return {"cpt": list(self.cpt), "modifiers": list(self.modifiers), "icd": list(self.icd)}


@dataclass(frozen=True)
class ParseResult:
    line: CodeLine
    issues: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.line.is_empty

    def to_dict(self) -> dict[str, list[str]]:
        return {**self.line.to_dict(), "issues": list(self.issues)}


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t for t in _SPLIT_TOKENS.split(value) if t]
    return [str(v) for v in value if str(v).strip()]


def _dedupe(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _clean(text: str) -> str:
    text = _SPECIAL.sub("\n", text)
    return _FENCE.sub("\n", text)


def _token_kind(token: str) -> str | None:
    """Classify a token by its shape alone: ``cpt``, ``mod``, ``icd`` or None."""
    t = token.strip().upper()
    if "." in t or (icd10cm.looks_like_icd(t) and not cpt_codes.looks_like_procedure(t)):
        return "icd" if icd10cm.looks_like_icd(t) else None
    if cpt_codes.looks_like_procedure(t):
        return "cpt"
    if mod_codes.looks_like_modifier(t):
        return "mod"
    return None


def _holds_codes(line: str) -> bool:
    return any(_token_kind(t) in ("cpt", "icd") for t in re.split(r"[\s,]+", line) if t)


def parse(text: object) -> ParseResult:
    """Parse model output into a :class:`CodeLine`; never raises.

    Fields are read by position (procedures, modifiers, diagnoses); when the modifier slot is
    missing, tokens are read by shape. Invalid codes are kept and named in ``issues``.
    """
    try:
        return _parse(text)
    except Exception as exc:  # the contract is "never raises": report instead
        return ParseResult(CodeLine(), (f"parser error: {type(exc).__name__}: {exc}",))


def _parse(text: object) -> ParseResult:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    issues: list[str] = []
    lines = [_LABEL.sub("", ln).strip() for ln in _clean(text).splitlines()]
    candidates = [ln for ln in lines if ln and _holds_codes(ln)]
    if not candidates:
        return ParseResult(CodeLine(), ("no code line found",))
    line = candidates[0]
    if len(candidates) > 1:
        issues.append(f"{len(candidates) - 1} further line(s) with codes ignored")
    fields = [f.strip() for f in line.split(",")]
    cpts, mods, icds = [], [], []
    first = [t for t in _SPLIT_TOKENS.split(fields[0]) if t]
    second = [t for t in _SPLIT_TOKENS.split(fields[1]) if t] if len(fields) > 1 else []
    positional = len(fields) >= 2 and all(_token_kind(t) == "mod" for t in second)
    if positional and all(_token_kind(t) == "cpt" for t in first):
        cpts, mods = first, second
        rest = [t for f in fields[2:] for t in _SPLIT_TOKENS.split(f) if t]
    else:
        issues.append("fields not in position; read by shape")
        rest = [t for f in fields for t in _SPLIT_TOKENS.split(f) if t]
    for tok in rest:
        kind = _token_kind(tok)
        if kind == "icd" or (positional and kind == "cpt" and icd10cm.is_valid(tok)):
            icds.append(tok)
        elif kind == "cpt":
            cpts.append(tok)
        elif kind == "mod":
            mods.append(tok)
        else:
            issues.append(f"token {tok!r} is not a code; dropped")
    result = CodeLine.of(cpts, mods, icds)
    issues += [f"invalid code {c!r}" for c in result.invalid_codes()]
    issues += [f"ICD-10-CM code {c!r} is not billable" for c in result.icd if icd10cm.is_valid(c) and not icd10cm.is_billable(c)]
    if not result.cpt:
        issues.append("no procedure code")
    if not result.icd:
        issues.append("no diagnosis code")
    return ParseResult(result, tuple(issues))
