"""The code line: the one answer format of the model and the only parser of model output.

A line is ``CPT[ CPT2], MOD[ MOD2], ICD1, ICD2, ...``; the modifier slot may be empty
(``74176, , R10.84``). :func:`parse` never raises.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from nyxmed.codes import cpt as cpt_codes
from nyxmed.codes import icd10cm, modifiers as mod_codes

_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|</?s>")
_THINK = r"(?:think|thinking|reasoning|reflection)"
_REASONING = re.compile(rf"<{_THINK}>.*?</{_THINK}>", re.I | re.S)
_REASONING_OPENED_BEFORE = re.compile(rf"^.*</{_THINK}>", re.I | re.S)  # opened in the prompt (R1-style)
_REASONING_UNCLOSED = re.compile(rf"<{_THINK}>.*$", re.I | re.S)  # cut off before it closed
_ANSWER_TAG = re.compile(r"<(/?)(?:final[ _-]?)?(?:answer|diagnos[ie]s|codes?|code[ _-]?line|billing[ _-]?codes)\s*>\s*",
                         re.I)
_FENCE = re.compile(r"```[a-zA-Z]*")
_MARKUP = re.compile(r"[*`]")  # markdown emphasis and inline code never belong to a code
_LABEL = re.compile(r"^\s*(?:[-#>]+\s*)?(?:(?:final\s+)?(?:codes?|answer|code\s*line|billing\s+codes?)\s*[:\-]\s*)+", re.I)
_SPLIT_TOKENS = re.compile(r"[\s;/|]+")
_WRAPPING = "\"'()[]{}<>:.-"  # quotes, brackets and sentence punctuation around a token
_HYPHENATED = re.compile(r"^([0-9]{5}|[0-9]{4}[FT]|[A-V][0-9]{4})-([0-9A-Z]{2})$")  # claim form: 74177-26


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
    def is_hard(self) -> bool:
        """A hard case: two or more procedures, three or more diagnoses, or two or more modifiers."""
        return len(self.cpt) >= 2 or len(self.icd) >= 3 or len(self.modifiers) >= 2

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
    """The parsed line, what was wrong with the text (``issues``) and the tokens that were not codes."""

    line: CodeLine
    issues: tuple[str, ...] = field(default_factory=tuple)
    dropped: tuple[str, ...] = field(default_factory=tuple)

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
    if isinstance(value, (int, float)):  # one code read as a number from a spreadsheet
        return [str(value)]
    return [str(v) for v in value if str(v).strip()]


def _dedupe(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _normalize(text: str) -> str:
    """Drop Unicode format characters (zero-width space, LRM/RLM, BOM, word joiner) and apply NFKC."""
    return unicodedata.normalize("NFKC", "".join(ch for ch in text if unicodedata.category(ch) != "Cf"))


def _strip_reasoning(text: str, issues: list[str]) -> str:
    """Remove ``<think>...</think>`` blocks, one opened in the prompt, and one cut off before it closed."""
    for pattern, issue in ((_REASONING, "reasoning block removed"),
                           (_REASONING_OPENED_BEFORE, "reasoning before '</think>' removed"),
                           (_REASONING_UNCLOSED, "unclosed reasoning block removed")):
        text, n = pattern.subn("\n", text)
        if n:
            issues.append(issue)
    return text


def _clean(text: str, issues: list[str]) -> str:
    text = _strip_reasoning(_SPECIAL.sub("\n", _normalize(text)), issues)
    # an answer tag's content is the answer: it becomes a labelled line, which wins over other lines
    text = _ANSWER_TAG.sub(lambda m: "\n" if m.group(1) else "\nAnswer: ", text)
    return _MARKUP.sub("", _FENCE.sub("\n", text))


def _tokens(field_text: str) -> list[str]:
    """Split a field into tokens without wrapping punctuation; ``74177-26`` becomes two tokens."""
    out = []
    for raw in _SPLIT_TOKENS.split(field_text):
        hyphenated = _HYPHENATED.match(raw.upper())
        if hyphenated:
            out += hyphenated.groups()
        elif raw.strip(_WRAPPING):
            out.append(raw.strip(_WRAPPING))
    return out


def _is_ambiguous(token: str) -> bool:
    """HCPCS-shaped and a valid ICD-10-CM code written without its dot (``R1084``)."""
    t = token.upper()
    return cpt_codes.kind(t) == "hcpcs" and icd10cm.is_valid(t)


def _token_kind(token: str) -> str | None:
    """Classify a token by its shape alone: ``cpt``, ``mod``, ``icd`` or None.

    An ambiguous token (see :func:`_is_ambiguous`) is ``cpt`` here; callers decide by position.
    """
    t = token.strip().upper()
    if "." in t or (icd10cm.looks_like_icd(t) and not cpt_codes.looks_like_procedure(t)):
        return "icd" if icd10cm.looks_like_icd(t) else None
    if cpt_codes.looks_like_procedure(t):
        return "cpt"
    if mod_codes.looks_like_modifier(t):
        return "mod"
    return None


def _holds_codes(line: str) -> bool:
    return any(_token_kind(t) in ("cpt", "icd") for t in _tokens(line.replace(",", " ")))


def parse(text: object) -> ParseResult:
    """Parse model output into a :class:`CodeLine`; never raises.

    Reasoning blocks are skipped; fields are read by position (procedures, modifiers, diagnoses),
    by shape when the modifier slot is missing. Invalid codes are kept and named in ``issues``.
    """
    try:
        return _parse(text)
    except Exception as exc:  # the contract is "never raises": report instead
        return ParseResult(CodeLine(), (f"parser error: {type(exc).__name__}: {exc}",))


def _parse(text: object) -> ParseResult:
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    issues: list[str] = []
    labelled = [(_LABEL.sub("", ln).strip(), bool(_LABEL.match(ln))) for ln in _clean(text, issues).splitlines()]
    candidates = [(ln, has_label) for ln, has_label in labelled if ln and _holds_codes(ln)]
    if not candidates:
        return ParseResult(CodeLine(), (*issues, "no code line found"))
    # "Codes: ..." wins over an earlier line that merely mentions a code ("Reason: R10.31 pain")
    line = next((ln for ln, has_label in candidates if has_label), candidates[0][0])
    if len(candidates) > 1:
        issues.append(f"{len(candidates) - 1} further line(s) with codes ignored")
    fields = [_tokens(f) for f in line.split(",")]
    first, second = fields[0], (fields[1] if len(fields) > 1 else [])
    # a known modifier may ride in the procedure field (claim form 74177-26, or "74177 26")
    positional = (len(fields) >= 2 and all(_token_kind(t) == "mod" for t in second) and all(
        _token_kind(t) == "cpt" or (_token_kind(t) == "mod" and mod_codes.is_known(t)) for t in first))
    cpts, mods, icds, dropped = [], [], [], []
    if positional:
        cpts = [t for t in first if _token_kind(t) == "cpt"]
        mods = [t for t in first if _token_kind(t) == "mod"] + second
        rest = [t for f in fields[2:] for t in f]
    else:
        issues.append("fields not in position; read by shape")
        rest = [t for f in fields for t in f]
    for tok in rest:
        kind = _token_kind(tok)
        # HCPCS-shaped ICD without its dot: a diagnosis in the diagnosis slots, or once a
        # procedure has been read (lines lead with procedures); otherwise a procedure.
        if kind == "cpt" and _is_ambiguous(tok) and (positional or cpts):
            kind = "icd"
        if kind == "icd":
            icds.append(tok)
        elif kind == "cpt":
            if positional:
                issues.append(f"procedure code {tok.upper()!r} after the modifier slot")
            cpts.append(tok)
        elif kind == "mod" and mod_codes.is_known(tok):  # prose ("if", "no", "or") is two letters too
            if positional:
                issues.append(f"modifier {tok.upper()!r} after the modifier slot")
            mods.append(tok)
        else:
            dropped.append(tok)
            issues.append(f"token {tok!r} is not a code; dropped")
    result = CodeLine.of(cpts, mods, icds)
    n_read = len(cpts) + len(mods) + len(icds)
    if n_read > len(result.cpt) + len(result.modifiers) + len(result.icd):
        issues.append("duplicate codes dropped")
    issues += [f"invalid code {c!r}" for c in result.invalid_codes()]
    issues += [f"ICD-10-CM code {c!r} is not billable" for c in result.icd if icd10cm.is_valid(c) and not icd10cm.is_billable(c)]
    if not result.cpt:
        issues.append("no procedure code")
    if not result.icd:
        issues.append("no diagnosis code")
    return ParseResult(result, tuple(issues), tuple(dropped))
