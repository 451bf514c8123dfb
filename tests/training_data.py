"""A small tokenized DatasetDict shaped like `nyxmed build-data` output, for trainer tests.

Prompts are short exam descriptions; answers are code lines. Labels are -100 except the answer
tokens and the final <|eot_id|>, as in the built dataset.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from datasets import Dataset, DatasetDict

from nyxmed.codeline import parse
from nyxmed.io import sha256_text
from nyxmed.training.loss import IGNORE_INDEX

EXAMS = ["CT abdomen pelvis with contrast", "MRI brain without contrast", "ultrasound duplex venous lower extremity",
         "chest radiograph two views", "MRI knee left", "CT chest without contrast", "ultrasound abdomen",
         "radiograph knee right two views"]
REASONS = ["pain", "mass", "nodule", "effusion", "fracture", "no acute abnormality"]
CODES = ["74177, 26, R10.84", "70551, , R51.9", "93970, , I83.93", "71046, 26, R91.1", "73721, LT 26, M25.562",
         "71250, 26, R91.8", "76700, 26, R10.9", "73562, RT, M25.561"]


SYSTEM = "Code the radiology report."


def example(tokenizer, user: str, answer: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one chat turn: system + user prompt, answer + <|eot_id|> as the target."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids


def rows(tokenizer, pairs: list[tuple[str, str]], prefix: str, weights: list[float] | None = None) -> dict:
    out = {"id": [], "input_ids": [], "attention_mask": [], "labels": [], "weight": [], "system": [], "user": [],
           "answer": [], "record_hash": [], "cpt": [], "modifiers": [], "icd": [], "modality": [], "subsection": []}
    for k, (user, answer) in enumerate(pairs):
        ids, labels = example(tokenizer, user, answer)
        out["id"].append(f"{prefix}-{k}")
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["labels"].append(labels)
        out["weight"].append(float(weights[k]) if weights else 1.0)
        out["system"].append(SYSTEM)
        out["user"].append(user)
        out["answer"].append(answer)
        line = parse(answer).line  # the gold columns evaluation reads
        out["record_hash"].append(sha256_text(f"{user}\n{answer}"))
        for name in ("cpt", "modifiers", "icd"):
            out[name].append(list(getattr(line, name)))
        out["modality"].append(user.split()[0])
        out["subsection"].append("")
    return out


def build_dataset(tokenizer, out_dir: str | Path, n_train: int = 16, n_val: int = 4,
                  unrelated_validation: bool = False) -> Path:
    """Save ``<out_dir>/dataset`` (train/validation/heldout) and ``<out_dir>/manifest.json``; returns the dataset path.

    ``unrelated_validation`` gives the validation prompts random lowercase letter strings as
    answers: once training fits the code lines it moves probability away from them, so with a
    high learning rate the eval loss turns upwards after a few steps and early stopping fires.
    """
    pairs = [(f"{EXAMS[i % len(EXAMS)]} reason {REASONS[i % len(REASONS)]}", CODES[i % len(CODES)])
             for i in range(n_train + n_val)]
    train = pairs[:n_train]
    val = pairs[n_train:]
    if unrelated_validation:
        rng = random.Random(0)
        val = [(user, " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(5)) for _ in range(3)))
               for user, _ in val]
    weights = [3.0 if k % 5 == 0 else 1.0 for k in range(n_train)]
    data = DatasetDict({"train": Dataset.from_dict(rows(tokenizer, train, "train", weights)),
                        "validation": Dataset.from_dict(rows(tokenizer, val, "val")),
                        "heldout": Dataset.from_dict(rows(tokenizer, val, "heldout"))})
    out = Path(out_dir)
    data.save_to_disk(str(out / "dataset"))
    (out / "manifest.json").write_text(json.dumps({"splits": {k: len(v) for k, v in data.items()}}))
    return out / "dataset"
