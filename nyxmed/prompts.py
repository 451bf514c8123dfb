"""Prompt assembly and the chat template: the one prompt path shared by training and evaluation.

A prompt is a Llama-3 chat: a system message, one user message (few-shot examples, CPT
candidates, ICD-10-CM candidates with official descriptions, coding rules, the report), and
for training the assistant answer: the rendered code line followed by ``<|eot_id|>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from nyxmed.cases import Case
from nyxmed.codes import icd10cm

SYSTEM_PROMPT = (
    "You are an expert certified radiology coder. You read a radiology report and assign the CPT "
    "procedure code(s), modifiers and ICD-10-CM diagnosis codes a certified coder would bill, "
    "following the coding rules given in each request. You answer with one code line and nothing else."
)
DEFAULT_RULES_FILE = Path(__file__).parent / "resources" / "coding_rules.txt"
END_OF_TURN = "<|eot_id|>"
CUT_MARK = "\n[...]\n"


def load_rules(path: str | Path | None = None) -> str:
    """The coding rules text (``prompt.rules_file``; default: the packaged radiology rules)."""
    file = Path(path) if path else DEFAULT_RULES_FILE
    if not file.is_file():
        raise FileNotFoundError(f"prompt.rules_file: no rules file at {str(file)!r}")
    text = file.read_text(encoding="utf-8").strip()
    if not text:
        raise ValueError(f"prompt.rules_file: {str(file)!r} is empty")
    return text


def is_explicit(record_id: str, seed: int, share: float) -> bool:
    """Whether this record's report shows the exam/reason lines; fixed by seed and id alone."""
    digest = hashlib.sha256(f"{seed}\x1f{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def report_head(case: Case, explicit: bool) -> str:
    """The lines before the body: ``Exam Description:`` / ``Reason for Exam:`` when explicit."""
    if not explicit:
        return ""
    return f"Exam Description: {case.exam_description}\nReason for Exam: {case.reason_for_exam}\n"


def icd_candidate_line(code: str) -> str:
    """``R10.84 Generalized abdominal pain`` (official ICD short description; public)."""
    try:
        return f"{code} {icd10cm.description(code)}"
    except KeyError:
        return code


@dataclass(frozen=True)
class Shot:
    """One few-shot example: a report as it would be shown, and its code line."""

    report: str
    answer: str


@dataclass(frozen=True)
class PromptParts:
    """Everything in the user message, in order; truncation shortens these, never the answer."""

    shots: tuple[Shot, ...]
    cpt: tuple[str, ...]
    icd: tuple[str, ...]
    rules: str
    head: str
    body: str

    def without_last_shot(self) -> "PromptParts":
        return replace(self, shots=self.shots[:-1])

    def with_shorter_candidates(self) -> "PromptParts | None":
        """Drop the lowest-ranked candidate of the longer list (each list keeps at least one)."""
        if len(self.icd) > 1 and len(self.icd) >= len(self.cpt):
            return replace(self, icd=self.icd[:-1])
        if len(self.cpt) > 1:
            return replace(self, cpt=self.cpt[:-1])
        if len(self.icd) > 1:
            return replace(self, icd=self.icd[:-1])
        return None


def shot_pieces(position: int, shot: Shot) -> list[tuple[str, bool]]:
    """Few-shot example ``position`` (from 1): its heading apart, since a case recurs at different positions."""
    return [(f"### Example {position}\n", True), (f"{shot.report}\nCodes: {shot.answer}\n\n", True)]


def cpt_list_text(codes: tuple[str, ...]) -> str:
    """The CPT candidate list's line: codes only (CPT descriptors are AMA-licensed)."""
    return ", ".join(codes) or "(none)"


def icd_list_text(codes: tuple[str, ...]) -> str:
    """The ICD-10-CM candidate lines, each with its official description."""
    return "\n".join(icd_candidate_line(c) for c in codes) or "(none)"


def removed_text(longer: PromptParts, shorter: PromptParts) -> str:
    """About the text one truncation step removed (last shot or last candidate): its token count
    says how much a step saves."""
    if len(shorter.shots) < len(longer.shots):
        return "".join(t for t, _ in shot_pieces(len(longer.shots), longer.shots[-1]))
    if shorter.icd != longer.icd:
        return icd_candidate_line(longer.icd[-1]) + "\n"
    return f"{longer.cpt[-1]}, "


def user_pieces(parts: PromptParts) -> list[tuple[str, bool]]:
    """The user message cut at line starts (section and example headings, example reports), each
    piece with whether it recurs across records (rules, headings, few-shot examples).

    ``"".join`` of the texts is ``build_user(parts)``; the dataset builder tokenizes recurring
    pieces once (see ``nyxmed.prompt_tokens.PieceEncoder``)."""
    pieces: list[tuple[str, bool]] = []
    if parts.shots:
        pieces.append(("## Coded examples of similar reports\n", True))
        for i, s in enumerate(parts.shots, 1):
            pieces += shot_pieces(i, s)
    else:
        pieces.append(("## Coded examples of similar reports\n(none)\n\n", True))
    pieces.append(("## CPT candidates (most likely first)\n" + cpt_list_text(parts.cpt) + "\n\n", False))
    pieces.append(("## ICD-10-CM candidates (most likely first)\n" + icd_list_text(parts.icd) + "\n\n", False))
    pieces.append((f"## Coding rules\n{parts.rules}\n\n", True))
    pieces.append((f"## Report to code\n{parts.head}{parts.body}", False))
    return pieces


def build_user(parts: PromptParts) -> str:
    """The user message: examples, CPT candidates, ICD-10-CM candidates, rules, report."""
    return "".join(text for text, _ in user_pieces(parts))


def shot_for(case: Case, seed: int, share: float) -> Shot:
    """A case shown as a few-shot example, in its own explicit/embedded layout."""
    return Shot(report_head(case, is_explicit(case.id, seed, share)) + case.report_text, case.codes.render())


def parts_for(case: Case, shots: tuple[Shot, ...], cpt: tuple[str, ...], icd: tuple[str, ...], rules: str,
              seed: int, share: float) -> PromptParts:
    """The user message's pieces for ``case``, its report in its own explicit/embedded layout."""
    return PromptParts(shots, cpt, icd, rules, report_head(case, is_explicit(case.id, seed, share)), case.report_text)


def chat_messages(system: str, user: str) -> list[dict[str, str]]:
    """The chat of a prompt as messages (what the chat template renders; TRL's conversational prompt)."""
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def render_prompt(tokenizer, system: str, user: str) -> str:
    """The chat-template text of (system, user) with the assistant generation prompt appended.

    The text already starts with the BOS token: encode it with ``add_special_tokens=False``.
    """
    return tokenizer.apply_chat_template(chat_messages(system, user), tokenize=False, add_generation_prompt=True)


def answer_text(case: Case) -> str:
    """The assistant answer: the rendered gold code line (the trainer appends ``<|eot_id|>``)."""
    return case.codes.render()
