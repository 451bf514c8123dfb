"""CPT and HCPCS Level II: shapes, the public radiology section ranges, licensed code tables.

CPT descriptors are licensed by the AMA, so none ship here. The ranges below are the public
section boundaries; a user-supplied licensed table (CSV ``code,description``) makes validity
strict (see :class:`CptTable`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from nyxmed.errors import InputError, NotFound

# [0-9], not \d: \d also matches other scripts' digits ("١٢٣٤٥"), which are no CPT code.
CATEGORY_I = re.compile(r"^[0-9]{5}$")
CATEGORY_II = re.compile(r"^[0-9]{4}F$")
CATEGORY_III = re.compile(r"^[0-9]{4}T$")
HCPCS_II = re.compile(r"^[A-V][0-9]{4}$")

# (first, last, name): public subsection boundaries of the CPT radiology section, plus the
# non-invasive vascular studies that radiology departments bill.
RADIOLOGY_SUBSECTIONS: tuple[tuple[int, int, str], ...] = (
    (70010, 76499, "diagnostic_radiology"),
    (76506, 76999, "ultrasound"),
    (77001, 77022, "radiologic_guidance"),
    (77046, 77067, "mammography"),
    (77071, 77092, "bone_joint"),
    (77261, 77799, "radiation_oncology"),
    (78012, 79999, "nuclear_medicine"),
    (93880, 93990, "vascular_ultrasound"),
)


def normalize(code: str) -> str:
    """Upper-case and strip a CPT/HCPCS code."""
    return str(code).strip().upper()


def kind(code: str) -> str | None:
    """``cpt1``, ``cpt2``, ``cpt3``, ``hcpcs`` by shape, or None when the shape fits no system."""
    c = normalize(code)
    for name, pattern in (("cpt1", CATEGORY_I), ("cpt2", CATEGORY_II), ("cpt3", CATEGORY_III), ("hcpcs", HCPCS_II)):
        if pattern.match(c):
            return name
    return None


def looks_like_procedure(token: str) -> bool:
    """True when ``token`` has the shape of a CPT or HCPCS Level II code."""
    return kind(token) is not None


def subsection(code: str) -> str | None:
    """The radiology subsection of a Category I code (``74177`` -> ``diagnostic_radiology``)."""
    c = normalize(code)
    if not CATEGORY_I.match(c):
        return None
    n = int(c)
    for lo, hi, name in RADIOLOGY_SUBSECTIONS:
        if lo <= n <= hi:
            return name
    return None


def is_radiology(code: str) -> bool:
    """True for a Category I code inside the public radiology ranges (incl. vascular ultrasound)."""
    return subsection(code) is not None


def radiology_codes() -> tuple[str, ...]:
    """Every five-digit number inside the public radiology ranges (a superset of the Category I codes
    there: which numbers are real codes is in the licensed table only)."""
    return tuple(f"{n:05d}" for lo, hi, _ in RADIOLOGY_SUBSECTIONS for n in range(lo, hi + 1))


def is_radiology_procedure(code: str) -> bool:
    """A code a radiology department bills without a licensed table to say more: Category I inside the
    radiology ranges, Category III (``0nnnT``, emerging technology) or HCPCS Level II (``A``-``V``)."""
    c = normalize(code)
    return is_radiology(c) or bool(CATEGORY_III.match(c) and c.startswith("0")) or bool(HCPCS_II.match(c))


@dataclass(frozen=True)
class CptTable:
    """A licensed code table; empty means shape-only validity (the default without a license)."""

    descriptions: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_csv(cls, path: str | Path) -> "CptTable":
        """Read ``code,description`` rows; raises ValueError naming the file and line of a bad row.

        An empty table is an error: a licensed table that silently loaded nothing would turn
        strict validity back into shape-only validity.
        """
        table: dict[str, str] = {}
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets add a BOM
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if "code" not in columns:
                raise ValueError(f"{path}:1: header has no 'code' column (got {reader.fieldnames!r}); "
                                 "expected 'code,description'")
            reader.fieldnames = columns
            for row in reader:
                where = f"{path}:{reader.line_num}"
                code = normalize(row.get("code") or "")
                if kind(code) is None:
                    raise ValueError(f"{where}: field 'code' has no CPT/HCPCS shape: {code!r}")
                desc = (row.get("description") or "").strip()
                if code in table and table[code] != desc:
                    raise ValueError(f"{where}: code {code!r} listed twice with different descriptions")
                table[code] = desc
        if not table:
            raise ValueError(f"{path}: no codes in the CPT table")
        return cls(table, str(path))

    @property
    def strict(self) -> bool:
        return bool(self.descriptions)

    def is_valid(self, code: str) -> bool:
        """Valid shape, and listed in the table when a table is loaded."""
        c = normalize(code)
        return kind(c) is not None and (not self.strict or c in self.descriptions)


def load_cpt_table(path: str | Path | None) -> CptTable | None:
    """The licensed table at ``path`` (None: no table); a missing or bad file is a user error naming it."""
    if path is None:
        return None
    try:
        return CptTable.from_csv(path)
    except FileNotFoundError as exc:
        raise NotFound(f"--cpt-table: no file at {str(path)!r}") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"--cpt-table: {exc}") from exc
