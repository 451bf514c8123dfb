"""Prompt tokens: a prompt and its answer as token ids within ``max_length``, truncating in a fixed
order, and piecewise tokenization that tokenizes recurring prompt pieces once (exactly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from nyxmed import prompts

log = logging.getLogger(__name__)

TRUNCATION_STAGES = ("shots", "candidates", "body")
BATCH = 512  # records tokenized together: recurring pieces are tokenized once per batch at most


@dataclass(frozen=True)
class Encoded:
    """One record's user message, prompt + answer ids, prompt length and the truncation stages used."""

    user: str
    input_ids: np.ndarray
    prompt_len: int
    stages: tuple[str, ...]


def _body_cut(tokenizer, body: str, keep: int, min_head: int) -> str:
    """``body`` with its middle replaced by ``CUT_MARK`` so about ``keep`` tokens remain."""
    enc = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if keep >= len(offsets):
        return body
    head = max(min_head, (2 * keep) // 3)
    tail = max(0, keep - head)
    head_end = offsets[min(head, len(offsets)) - 1][1] if head else 0
    tail_start = offsets[len(offsets) - tail][0] if tail else len(body)
    return body[:head_end] + prompts.CUT_MARK + body[tail_start:]


def encode_record(tokenizer, system: str, parts: prompts.PromptParts, answer_ids: list[int], max_length: int,
                  min_body_tokens: int, first: tuple[str, list[int]] | None = None) -> Encoded | None:
    """Tokens of prompt + answer within ``max_length``; shortens few-shots, then candidate tails,
    then the middle of the report body. The answer and the report head are never cut; None when
    even that does not fit."""
    stages: list[str] = []

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokens(p: prompts.PromptParts) -> tuple[str, list[int]]:
        user = prompts.build_user(p)
        return user, tokenizer(prompts.render_prompt(tokenizer, system, user), add_special_tokens=False)["input_ids"]

    user, ids = first if first is not None else tokens(parts)  # `first`: this prompt already tokenized
    budget = max_length - len(answer_ids)
    # each round drops as many pieces as their own token counts say are needed, then re-measures
    # the whole prompt (pieces do not add up exactly); every round removes at least one piece
    while len(ids) > budget and (parts.shots or parts.with_shorter_candidates() is not None):
        over = len(ids) - budget
        while over > 0 and parts.shots:
            shorter = parts.without_last_shot()
            over -= count(prompts.removed_text(parts, shorter))
            parts = shorter
            stages.append("shots")
        while over > 0 and not parts.shots:
            shorter = parts.with_shorter_candidates()
            if shorter is None:
                break
            over -= count(prompts.removed_text(parts, shorter))
            parts = shorter
            stages.append("candidates")
        user, ids = tokens(parts)
    body = parts.body
    for _ in range(8):
        if len(ids) <= budget:
            break
        keep = count(body) - (len(ids) - budget) - 8  # 8: room for the cut mark's own tokens
        if keep < min_body_tokens:
            return None
        body = _body_cut(tokenizer, parts.body, keep, min_body_tokens)
        user, ids = tokens(prompts.PromptParts(parts.shots, parts.cpt, parts.icd, parts.rules, parts.head, body))
        stages.append("body")
    if len(ids) > budget:
        return None
    return Encoded(user, np.concatenate([np.asarray(ids, np.int32), np.asarray(answer_ids, np.int32)]), len(ids),
                   tuple(dict.fromkeys(stages)))


class PieceEncoder:
    """Token ids of rendered prompts, built from separately tokenized pieces of the user message;
    recurring pieces (rules, headings, few-shot examples) are tokenized once.

    Exact, not approximate: pieces are only cut where a newline is followed by a non-space
    character (other joins are re-glued), and under the byte-level pre-tokenizers in use (Llama-3
    and GPT-2 regexes, optionally with ``Digits``) no pre-token spans such a join, so BPE merges
    cannot cross a cut. A piece is tokenized with the character that follows it in the prompt
    appended and that character's tokens dropped (checked), so the regexes' look-ahead sees what it
    sees in the whole prompt. The template's special tokens split the rest. ``verify`` compares
    with whole-prompt tokenization; the builder runs it on its first records and falls back to
    whole prompts if any differ."""

    SENTINEL = "\x00user\x00"

    def __init__(self, tokenizer, system: str):
        self.tokenizer = tokenizer
        self.system = system
        rendered = prompts.render_prompt(tokenizer, system, self.SENTINEL)
        self.prefix, self.suffix = rendered.split(self.SENTINEL)
        self.trims = prompts.render_prompt(tokenizer, system, " x ").startswith(self.prefix + "x")
        self.cache: dict[tuple[str, str], np.ndarray] = {}  # (recurring piece, next character) -> ids
        self.char_ids: dict[str, np.ndarray] = {}
        self.suffix_ids = self._encode([self.suffix])[0]

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        out = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [np.asarray(ids, dtype=np.int32) for ids in out]

    def _encode_followed(self, keys: list[tuple[str, str]]) -> list[np.ndarray]:
        """Ids of each text as it tokenizes when the given character follows it."""
        chars = sorted({c for _, c in keys} - self.char_ids.keys())
        self.char_ids.update(zip(chars, self._encode(chars)))
        out = []
        for (text, nxt), ids in zip(keys, self._encode([t + c for t, c in keys])):
            tail = self.char_ids[nxt]
            if len(ids) < len(tail) or not np.array_equal(ids[len(ids) - len(tail):], tail):
                raise ValueError(f"tokenizer merges {nxt!r} into the preceding text {text[-40:]!r}: pieces are not exact")
            out.append(ids[:len(ids) - len(tail)])
        return out

    def _joined(self, pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
        """The pieces of one message (template trim applied), re-glued wherever a cut is not
        a newline followed by a non-space character."""
        out: list[tuple[str, bool]] = []
        for text, recurs in [(self.prefix, True), *pieces]:
            if out and not (out[-1][0].endswith("\n") and text[:1].strip()):
                out[-1] = (out[-1][0] + text, out[-1][1] and recurs)
            else:
                out.append((text, recurs))
        return out

    def encode(self, users_pieces: list[list[tuple[str, bool]]]) -> list[np.ndarray]:
        """Prompt ids (``render_prompt`` then tokenize) for each user message given as pieces."""
        if self.trims:  # the template trims the message; the outer pieces carry its ends
            users_pieces = [[(t.lstrip() if j == 0 else t, r) for j, (t, r) in enumerate(p)] for p in users_pieces]
            users_pieces = [p[:-1] + [(p[-1][0].rstrip(), p[-1][1])] for p in users_pieces]
        joined = [self._joined(p) for p in users_pieces]
        plan, followed, last = [], {}, {}
        for pieces in joined:
            keys = []
            for j, (text, recurs) in enumerate(pieces):
                if j == len(pieces) - 1:
                    key = (text, "")
                    last[key] = None
                else:
                    key = (text, pieces[j + 1][0][0])
                    if not (recurs and key in self.cache):
                        followed[key] = None
                keys.append((key, recurs))
            plan.append(keys)
        new = dict(zip(followed, self._encode_followed(list(followed))))
        new.update(zip(last, self._encode([t for t, _ in last])))
        out = []
        for keys in plan:
            arrays = []
            for key, recurs in keys:
                ids = self.cache.get(key) if recurs else None
                if ids is None:
                    ids = new[key]
                    if recurs and key[1]:
                        self.cache[key] = ids
                arrays.append(ids)
            arrays.append(self.suffix_ids)
            out.append(np.concatenate(arrays))
        return out

    def verify(self, users_pieces: list[list[tuple[str, bool]]]) -> bool:
        """Whether ``encode`` equals tokenizing the whole rendered prompt for these messages."""
        users = ["".join(t for t, _ in p) for p in users_pieces]
        whole = self._encode([prompts.render_prompt(self.tokenizer, self.system, u) for u in users])
        return all(np.array_equal(a, b) for a, b in zip(self.encode(users_pieces), whole))


class PromptEncoder:
    """Prompt + answer ids of batches of records within ``max_length`` (see :func:`encode_record`),
    piecewise when :class:`PieceEncoder` is proven exact on the first batch, else whole prompts."""

    def __init__(self, tokenizer, system: str, max_length: int, min_body_tokens: int):
        self.tokenizer, self.system = tokenizer, system
        self.max_length, self.min_body_tokens = max_length, min_body_tokens
        self.eot = [tokenizer.convert_tokens_to_ids(prompts.END_OF_TURN)]
        self.pieces = PieceEncoder(tokenizer, system)
        self.mode: str | None = None  # "pieces" or "whole", decided on the first batch

    def _prompt_ids(self, pieces: list[list[tuple[str, bool]]], users: list[str]) -> list:
        if self.mode is None:  # prove the piecewise path on these first records, else whole prompts
            try:
                self.mode = "pieces" if self.pieces.verify(pieces[:64]) else "whole"
            except ValueError:
                self.mode = "whole"
            if self.mode == "whole":
                log.warning("piecewise tokenization differs from whole prompts for this tokenizer; "
                            "tokenizing whole prompts (slower)")
        if self.mode == "pieces":
            try:
                return self.pieces.encode(pieces)
            except ValueError as err:  # a piece whose end merges with the next '#': this batch whole
                log.warning("%s; tokenizing this batch as whole prompts", err)
        return self.tokenizer([prompts.render_prompt(self.tokenizer, self.system, u) for u in users],
                              add_special_tokens=False)["input_ids"]

    def encode(self, parts_list: list[prompts.PromptParts], answer_ids: list[list[int]] | None = None,
               reserve: list[int] | None = None) -> list[Encoded | None]:
        """Each record's :class:`Encoded`, None where it cannot fit. With ``answer_ids``, the answer and
        ``<|eot_id|>`` follow the prompt; without, the prompt alone keeps ``reserve[i]`` tokens free."""
        pieces = [prompts.user_pieces(p) for p in parts_list]
        users = ["".join(t for t, _ in p) for p in pieces]
        out = []
        for i, (parts, user, p_ids) in enumerate(zip(parts_list, users, self._prompt_ids(pieces, users))):
            answer, max_length = (answer_ids[i] + self.eot, self.max_length) if answer_ids is not None else \
                ([], self.max_length - reserve[i])
            out.append(encode_record(self.tokenizer, self.system, parts, answer, max_length, self.min_body_tokens,
                                     first=(user, p_ids)))
        return out
