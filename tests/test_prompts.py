"""Prompt assembly: section order, explicit/embedded share, ICD descriptions, chat template."""

from __future__ import annotations

import re

import pytest

from nyxmed import prompts
from nyxmed.cases import case_from_record
from nyxmed.codes import icd10cm


def _case(rid="r1"):
    return case_from_record({"id": rid, "exam_description": "CT ABDOMEN PELVIS WITH CONTRAST",
                             "reason_for_exam": "Abdominal pain", "report_text": "FINDINGS: Diverticulosis.\nIMPRESSION: ...",
                             "cpt": ["74177"], "modifiers": ["26"], "icd": ["R10.84", "K57.30"]})


def _parts(case, explicit=True):
    shot = prompts.shot_for(_case("shot"), 17, 1.0)
    return prompts.PromptParts((shot,), ("74177", "74176"), ("R10.84", "K57.30", "K57.32"), "RULE TEXT",
                               prompts.report_head(case, explicit), case.report_text)


def test_explicit_share_is_deterministic_and_close_to_config():
    ids = [f"rec-{i}" for i in range(4000)]
    share = sum(prompts.is_explicit(i, 17, 0.7) for i in ids) / len(ids)
    assert 0.67 < share < 0.73
    assert [prompts.is_explicit(i, 17, 0.7) for i in ids[:50]] == [prompts.is_explicit(i, 17, 0.7) for i in ids[:50]]
    assert [prompts.is_explicit(i, 17, 0.7) for i in ids] != [prompts.is_explicit(i, 18, 0.7) for i in ids]
    assert not any(prompts.is_explicit(i, 17, 0.0) for i in ids[:200])
    assert all(prompts.is_explicit(i, 17, 1.0) for i in ids[:200])


def test_user_message_sections_in_order_with_official_icd_descriptions():
    case = _case()
    user = prompts.build_user(_parts(case))
    marks = ["### Example 1", "## CPT candidates", "## ICD-10-CM candidates", "## Coding rules", "## Report to code"]
    positions = [user.index(m) for m in marks]
    assert positions == sorted(positions)
    assert "Codes: 74177, 26, R10.84, K57.30" in user
    for code in ("R10.84", "K57.30", "K57.32"):
        assert f"{code} {icd10cm.description(code)}" in user
    # CPT candidates are codes only (CPT descriptors are licensed)
    cpt_section = user.split("## CPT candidates (most likely first)\n")[1].split("\n\n")[0]
    assert re.fullmatch(r"\d{5}(, \d{5})*", cpt_section)
    assert user.endswith("Exam Description: CT ABDOMEN PELVIS WITH CONTRAST\nReason for Exam: Abdominal pain\n"
                         + case.report_text)


def test_embedded_report_is_body_only():
    case = _case()
    user = prompts.build_user(_parts(case, explicit=False))
    report = user.split("## Report to code\n")[1]
    assert report == case.report_text
    assert "Reason for Exam" not in report


def test_render_prompt_uses_chat_template_with_generation_prompt(tiny_tokenizer):
    text = prompts.render_prompt(tiny_tokenizer, prompts.SYSTEM_PROMPT, "USER BODY")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + prompts.SYSTEM_PROMPT)
    assert "<|start_header_id|>user<|end_header_id|>\n\nUSER BODY<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "coding rules given in each request" in prompts.SYSTEM_PROMPT


def test_rules_file_default_custom_and_missing(tmp_path):
    assert "Code to the highest documented specificity" in prompts.load_rules()
    custom = tmp_path / "rules.txt"
    custom.write_text("Only rule.\n")
    assert prompts.load_rules(custom) == "Only rule."
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        prompts.load_rules(tmp_path / "nope.txt")


def test_shorter_candidates_keeps_one_of_each():
    parts = _parts(_case())
    seen = []
    while (parts := parts.with_shorter_candidates()) is not None:
        seen.append((len(parts.cpt), len(parts.icd)))
    assert seen[-1] == (1, 1)
    assert seen[0] == (2, 2)  # the longer (ICD) list loses its tail first
