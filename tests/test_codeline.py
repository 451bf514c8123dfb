"""The code line: canonical rendering and the one parser of model output."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nyxmed.codeline import CodeLine, ParseResult, parse
from nyxmed.codes import cpt, icd10cm, modifiers

# ----------------------------------------------------------------------------- rendering


def test_render_canonical_forms():
    assert CodeLine.of("93970", "26", ["M79.89", "I83.93"]).render() == "93970, 26, M79.89, I83.93"
    assert CodeLine.of(["74177", "71260"], [], ["R10.9"]).render() == "74177 71260, , R10.9"
    assert CodeLine.of("74176", None, "R10.84").render() == "74176, , R10.84"
    assert CodeLine.of("73721", ["RT", "26"], "M25.561").render() == "73721, RT 26, M25.561"


def test_of_normalizes_and_drops_duplicates_in_order():
    line = CodeLine.of(" 74177 74177", ["rt", "RT", "26"], ["r1084", "K57.30", "R10.84", "k5730"])
    assert line == CodeLine(("74177",), ("RT", "26"), ("R10.84", "K57.30"))
    assert CodeLine.of(74177, None, "M25.511").cpt == ("74177",)  # a number from a spreadsheet


def test_invalid_codes_and_to_dict():
    line = CodeLine.of("74177 7417", "26 R!", ["R10.84", "M25.599"])
    assert line.invalid_codes() == ["7417", "R!", "M25.599"]
    strict = cpt.CptTable({"74176": "placeholder"}, "t.csv")
    assert CodeLine.of("74177", "", "R10.84").invalid_codes(strict) == ["74177"]
    assert CodeLine.of("74176", "", "R10.84").to_dict() == {"cpt": ["74176"], "modifiers": [], "icd": ["R10.84"]}


# ----------------------------------------------------------------------------- parse: examples

@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("93970, 26, M79.89, I83.93", "93970, 26, M79.89, I83.93"),
        ("74177 71260, , R10.9", "74177 71260, , R10.9"),
        ("74176, , R10.84", "74176, , R10.84"),
        ("74176, , R10.84<|eot_id|>", "74176, , R10.84"),
        ("<|start_header_id|>assistant<|end_header_id|>\n\n74176, , R10.84<|eot_id|><|end_of_text|>", "74176, , R10.84"),
        ("```\n74176, , R10.84\n```", "74176, , R10.84"),
        ("```text\n73721, RT, M25.561\n```", "73721, RT, M25.561"),
        ("Codes: 74176, , R10.84", "74176, , R10.84"),
        ("Answer: 74176, , R10.84", "74176, , R10.84"),
        ("**Final answer:** `74176, , R10.84`", "74176, , R10.84"),
        ("Codes:\n74177, 26, R10.84, K57.30\nThe CT shows diverticulosis.", "74177, 26, R10.84, K57.30"),
        ("74176, , r1084, k57.30", "74176, , R10.84, K57.30"),  # case and dot normalized
        ("74176, , R10.84, R10.84, K57.30, r1084", "74176, , R10.84, K57.30"),  # duplicates dropped in order
        ("74177-26, , R10.84", "74177, 26, R10.84"),  # claim-form hyphenated modifier
        ("(74176), , (R10.84).", "74176, , R10.84"),
    ],
)
def test_parse_examples(text, rendered):
    assert parse(text).line.render() == rendered


def test_parse_clean_line_has_no_issues():
    result = parse("93970, 26, M79.89, I83.93")
    assert result.ok and result.issues == () and result.dropped == ()


def test_parse_missing_modifier_slot_falls_back_to_shape():
    result = parse("74176, R10.84")
    assert result.line == CodeLine(("74176",), (), ("R10.84",))
    assert "fields not in position; read by shape" in result.issues
    result = parse("74176 26 R10.84 K57.30")
    assert result.line == CodeLine(("74176",), ("26",), ("R10.84", "K57.30"))


def test_parse_hcpcs_shaped_icd_without_dot_is_read_by_position():
    # R1084 is both an HCPCS Level II shape and R10.84 without its dot
    assert parse("74176, , R1084").line == CodeLine(("74176",), (), ("R10.84",))
    assert parse("74176, R1084").line == CodeLine(("74176",), (), ("R10.84",))  # after a procedure
    assert parse("74176 R1084").line == CodeLine(("74176",), (), ("R10.84",))
    # in the procedure field it is a procedure; an HCPCS code that is not an ICD code stays one
    assert parse("R1084, , M25.511").line == CodeLine(("R1084",), (), ("M25.511",))
    assert parse("74176 G0297, , R10.84").line.cpt == ("74176", "G0297")
    assert parse("74176, G0297, R10.84").line == CodeLine(("74176", "G0297"), (), ("R10.84",))


def test_parse_keeps_invalid_codes_and_names_them():
    result = parse("74176, ZZ, M25.599, R10.84")
    assert result.line == CodeLine(("74176",), ("ZZ",), ("M25.599", "R10.84"))
    assert "invalid code 'M25.599'" in result.issues
    result = parse("74176, , M25.5")
    assert result.line.icd == ("M25.5",)
    assert "ICD-10-CM code 'M25.5' is not billable" in result.issues


def test_parse_codes_out_of_their_slot_are_kept_and_flagged():
    result = parse("74176, , R10.84, 71260, RT")
    assert result.line == CodeLine(("74176", "71260"), ("RT",), ("R10.84",))
    assert "procedure code '71260' after the modifier slot" in result.issues
    assert "modifier 'RT' after the modifier slot" in result.issues


def test_parse_uses_first_line_with_codes():
    result = parse("Here are the codes.\n74176, , R10.84\n74177, 26, K57.30")
    assert result.line == CodeLine(("74176",), (), ("R10.84",))
    assert "1 further line(s) with codes ignored" in result.issues


def test_parse_prefers_a_labelled_line():
    result = parse("Reason: R10.31 pain in the right lower quadrant\nCodes: 74177, , R10.31")
    assert result.line == CodeLine(("74177",), (), ("R10.31",))
    assert "1 further line(s) with codes ignored" in result.issues


def test_parse_prose_drops_words_and_lists_them():
    result = parse("I think 74176 and R10.84 fit.")
    assert result.line == CodeLine(("74176",), (), ("R10.84",))
    assert result.dropped == ("I", "think", "and", "fit")
    assert "token 'think' is not a code; dropped" in result.issues


@pytest.mark.parametrize(
    ("text", "line", "dropped"),
    [
        ("74177, , R10.84 if no contrast", CodeLine(("74177",), (), ("R10.84",)), ("if", "no", "contrast")),
        ("74177, 26, R10.84 is my answer", CodeLine(("74177",), ("26",), ("R10.84",)), ("is", "my", "answer")),
        ("74177, , R10.84 or K57.30", CodeLine(("74177",), (), ("R10.84", "K57.30")), ("or",)),
    ],
)
def test_parse_prose_after_the_modifier_slot_is_not_modifiers(text, line, dropped):
    # two-letter words are modifier-shaped; after the slot only the modifier table's codes count
    result = parse(text)
    assert result.line == line
    assert result.dropped == dropped
    assert all(f"token {w!r} is not a code; dropped" in result.issues for w in dropped)
    assert not any("after the modifier slot" in i for i in result.issues)


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        ("<think>The pain suggests R10.31; maybe 74176 without contrast.</think>\n74177, 26, R10.84",
         "reasoning block removed"),
        ("<THINKING>\nR10.31?\n74176?\n</THINKING>\n\n74177, 26, R10.84<|eot_id|>", "reasoning block removed"),
        # the block was opened by the chat template, so the output starts inside it
        ("R10.31 fits, or 74176 ...</think>\n\n74177, 26, R10.84", "reasoning before '</think>' removed"),
        ("74177, 26, R10.84\n<think>or R10.31 with 74176", "unclosed reasoning block removed"),
    ],
)
def test_parse_skips_reasoning_blocks(text, issue):
    result = parse(text)
    assert result.line == CodeLine(("74177",), ("26",), ("R10.84",))
    assert result.issues == (issue,)


def test_parse_unclosed_reasoning_at_the_start_is_no_answer():
    result = parse("<think>R10.31 pain, so 74176 or 74177, , R10.84 ...")
    assert result.line == CodeLine() and result.issues == ("unclosed reasoning block removed", "no code line found")


@pytest.mark.parametrize(
    "text",
    [
        "<diagnosis>74177, 26, R10.84</diagnosis>",
        "<answer>\n74177, 26, R10.84\n</answer>",
        "<Final_Answer>Codes: 74177, 26, R10.84</Final_Answer>",
        "Reason: R10.31 pain\n<answer>74177, 26, R10.84</answer>",  # the tagged answer wins like a label
        "<think>R10.31</think><answer>74177, 26, R10.84</answer>",
    ],
)
def test_parse_unwraps_answer_tags(text):
    result = parse(text)
    assert result.line == CodeLine(("74177",), ("26",), ("R10.84",))
    assert result.dropped == ()


@pytest.mark.parametrize(
    "text",
    [
        "\ufeff74177, 26, R10.84",  # BOM
        "\u200b74177\u200b, 26, R10.84\u200b",  # zero-width spaces
        "\u200e74177\u200f, 26, R10.\u206084",  # LRM, RLM, a word joiner inside a code
        "74177, 2\u20606, R10.84\u2060",  # word joiners
        "Codes:\u00a0\uff17\uff14\uff11\uff17\uff17\uff0c 26\uff0c R10.84",  # NBSP, full-width digits and commas
    ],
)
def test_parse_normalizes_unicode_format_characters_and_compatibility_forms(text):
    result = parse(text)
    assert result.line == CodeLine(("74177",), ("26",), ("R10.84",))
    assert result.issues == ()


@pytest.mark.parametrize("text", ["", "   ", "no codes here", "<|eot_id|>", "```\n```", None, 42, "Codes:"])
def test_parse_empty_or_garbage_gives_empty_line_and_issue(text):
    result = parse(text)
    assert result.line == CodeLine() and not result.ok
    assert result.issues


def test_parse_reports_missing_procedure_and_diagnosis():
    assert "no diagnosis code" in parse("74176, 26").issues
    assert "no procedure code" in parse(", , R10.84").issues
    assert parse(", , R10.84").line == CodeLine((), (), ("R10.84",))


def test_parse_to_dict_has_the_cli_keys():
    assert parse("74176, R10.84").to_dict() == {
        "cpt": ["74176"], "modifiers": [], "icd": ["R10.84"], "issues": ["fields not in position; read by shape"]}


# ----------------------------------------------------------------------------- parse: properties
SPECIAL = ["<|eot_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|finetune_right_pad_id|>", "```", "Codes:", "Answer:", ",", ", ,", "\n", "-", "74176", "R10.84",
           "R1084", "26", ".", "|", "<s>", "</s>", "\u0667\u0664\u0661\u0667\u0667", "M25.5.1.1", "ß"]

arbitrary_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=12)), max_size=25).map("".join),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=12)), max_size=25).map(" ".join),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_text)
def test_parse_never_raises_and_returns_normalized_codes(text):
    result = parse(text)
    assert isinstance(result, ParseResult)
    assert not any(i.startswith("parser error") for i in result.issues), result.issues
    line = result.line
    assert all(cpt.looks_like_procedure(c) and c == cpt.normalize(c) for c in line.cpt)
    assert all(modifiers.looks_like_modifier(m) and m == m.upper() for m in line.modifiers)
    assert all(icd10cm.looks_like_icd(i) and i == icd10cm.normalize(i) for i in line.icd)
    assert len(set(line.cpt)) == len(line.cpt) and len(set(line.icd)) == len(line.icd)
    if line.is_empty:
        assert result.issues


def _radiology_cpt():
    return st.sampled_from(cpt.RADIOLOGY_SUBSECTIONS).flatmap(
        lambda r: st.integers(r[0], r[1]).map(lambda n: f"{n:05d}"))


BILLABLE = icd10cm.all_billable()

valid_lines = st.builds(
    CodeLine,
    st.lists(_radiology_cpt(), min_size=1, max_size=3, unique=True).map(tuple),
    st.lists(st.sampled_from(sorted(modifiers.MODIFIERS)), max_size=3, unique=True).map(tuple),
    st.lists(st.sampled_from(BILLABLE), min_size=1, max_size=5, unique=True).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(valid_lines)
def test_round_trip_of_every_valid_line(line):
    result = parse(line.render())
    assert result.line == line
    assert result.issues == ()


@settings(max_examples=150, deadline=None)
@given(valid_lines, st.sampled_from(["{}", "{}<|eot_id|>", "Codes: {}", "```\n{}\n```", "Answer: {}\n\nReason: ...",
                                     "<|start_header_id|>assistant<|end_header_id|>\n\n{}<|eot_id|>"]))
def test_round_trip_through_model_style_wrapping(line, wrapper):
    assert parse(wrapper.format(line.render())).line == line


@settings(max_examples=150, deadline=None)
@given(valid_lines)
def test_dotless_lower_case_icd_still_round_trips(line):
    # models often drop the dot and the case; in the diagnosis slots this must not change the line
    text = ", ".join([" ".join(line.cpt), " ".join(line.modifiers), *(i.replace(".", "").lower() for i in line.icd)])
    assert parse(text).line == line


@settings(max_examples=150, deadline=None)
@given(valid_lines, st.lists(st.tuples(st.integers(0, 200), st.sampled_from("\u200b\u200e\u200f\ufeff\u2060\u00ad")),
                             max_size=6))
def test_round_trip_through_format_characters_and_reasoning(line, inserts):
    # format characters anywhere, and a reasoning block holding other codes before the line
    text = line.render()
    for pos, ch in sorted(inserts, reverse=True):
        text = text[:pos] + ch + text[pos:]
    assert parse(text).line == line
    assert parse(f"<think>Maybe 74176, , R10.31 instead.</think>\n{text}").line == line
