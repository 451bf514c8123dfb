"""`nyxmed parse` and `nyxmed codes check`: in-process and through the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nyxmed.cli import main


def _run(capsys, argv: list[str]):
    code = main(argv)
    out = capsys.readouterr()
    return code, json.loads(out.out) if out.out.strip() else None, out.err


def test_parse_prints_line_and_issues(capsys):
    code, out, _ = _run(capsys, ["parse", "Codes: 74177 71260, 26, r1084, K57.30<|eot_id|>"])
    assert code == 0
    assert out == {"cpt": ["74177", "71260"], "modifiers": ["26"], "icd": ["R10.84", "K57.30"], "issues": []}


def test_parse_garbage_prints_empty_line_with_issue(capsys):
    code, out, _ = _run(capsys, ["parse", "no codes here"])
    assert code == 0
    assert out == {"cpt": [], "modifiers": [], "icd": [], "issues": ["no code line found"]}


def test_parse_flags_invalid_codes(capsys):
    _, out, _ = _run(capsys, ["parse", "74176, R10.84, M25.599"])
    assert out["icd"] == ["R10.84", "M25.599"]
    assert "invalid code 'M25.599'" in out["issues"] and "fields not in position; read by shape" in out["issues"]


def test_codes_check_describes_each_code(capsys):
    code, out, _ = _run(capsys, ["codes", "check", "74177", "m25511", "M25.5", "RT", "93970", "R1084", "xyz"])
    assert code == 0
    by_code = {o["code"]: o for o in out}
    assert [o["code"] for o in out] == ["74177", "M25.511", "M25.5", "RT", "93970", "R10.84", "xyz"]
    assert by_code["74177"]["system"] == "cpt1" and by_code["74177"]["subsection"] == "diagnostic_radiology"
    assert by_code["93970"]["subsection"] == "vascular_ultrasound"
    assert (by_code["M25.511"]["valid"], by_code["M25.511"]["billable"], by_code["M25.511"]["chapter"],
            by_code["M25.511"]["category"]) == (True, True, "13", "M25")
    assert by_code["M25.5"]["valid"] is True and by_code["M25.5"]["billable"] is False
    assert by_code["RT"]["system"] == "modifier" and by_code["RT"]["kind"] == "laterality"
    assert by_code["R10.84"]["system"] == "icd10cm"
    assert by_code["xyz"]["system"] is None and by_code["xyz"]["valid"] is False


def test_codes_check_with_licensed_table(tmp_path, capsys):
    table = tmp_path / "cpt.csv"
    table.write_text("code,description\n74177,placeholder\n", encoding="utf-8")
    _, out, _ = _run(capsys, ["codes", "check", "74177", "74176", "--cpt-table", str(table)])
    assert [o["valid"] for o in out] == [True, False]
    assert out[0]["cpt_table"] == str(table)


def test_codes_check_bad_table_exits_3_naming_the_line(tmp_path, capsys):
    table = tmp_path / "cpt.csv"
    table.write_text("code,description\n74177,placeholder\n7417,bad\n", encoding="utf-8")
    code, out, err = _run(capsys, ["codes", "check", "74177", "--cpt-table", str(table)])
    assert code == 3 and out is None  # InputError (docs/exit-codes.md)
    assert f"{table}:3" in err and "'7417'" in err


def test_codes_check_needs_a_code(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["codes", "check"])
    assert exc.value.code == 2


def test_installed_console_script(tmp_path):
    script = shutil.which("nyxmed", path=str(Path(sys.executable).parent)) or shutil.which("nyxmed")
    assert script, "the nyxmed console script is not installed (pip install -e .)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # one process start (the ICD release loads in each): codes check exercises the packaged data
    done = subprocess.run([script, "codes", "check", "S72001A", "74177"], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    out = json.loads(done.stdout)
    assert out[0]["code"] == "S72.001A" and out[0]["billable"] is True and out[0]["chapter"] == "19"
    assert out[1]["system"] == "cpt1"
