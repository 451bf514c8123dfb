"""CPT/HCPCS modifiers used in radiology coding, with our own short descriptions and kinds."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SHAPE = re.compile(r"^[0-9A-Z]{2}$")


@dataclass(frozen=True)
class Modifier:
    code: str
    kind: str  # component | laterality | distinct | repeat | reduced | payer | multiple
    description: str


MODIFIERS: dict[str, Modifier] = {
    m.code: m
    for m in (
        Modifier("26", "component", "professional component: the radiologist's interpretation"),
        Modifier("TC", "component", "technical component: equipment, staff and supplies"),
        Modifier("LT", "laterality", "left side of the body"),
        Modifier("RT", "laterality", "right side of the body"),
        Modifier("50", "laterality", "bilateral procedure in the same session"),
        Modifier("59", "distinct", "distinct procedural service"),
        Modifier("XE", "distinct", "separate encounter"),
        Modifier("XP", "distinct", "separate practitioner"),
        Modifier("XS", "distinct", "separate structure or organ"),
        Modifier("XU", "distinct", "unusual non-overlapping service"),
        Modifier("51", "multiple", "multiple procedures"),
        Modifier("52", "reduced", "reduced services"),
        Modifier("53", "reduced", "discontinued procedure"),
        Modifier("76", "repeat", "repeat procedure by the same physician"),
        Modifier("77", "repeat", "repeat procedure by another physician"),
        Modifier("91", "repeat", "repeat clinical diagnostic laboratory test"),
        Modifier("GA", "payer", "waiver of liability statement on file"),
        Modifier("GZ", "payer", "item expected to be denied as not reasonable and necessary"),
        Modifier("Q0", "payer", "investigational clinical service in an approved study"),
        Modifier("JW", "payer", "drug amount discarded, not administered"),
    )
}


def normalize(code: str) -> str:
    return str(code).strip().upper()


def looks_like_modifier(token: str) -> bool:
    """Two-character alphanumeric token (the shape of any CPT/HCPCS modifier)."""
    return bool(_SHAPE.match(normalize(token)))


def is_known(code: str) -> bool:
    """True for a modifier in the radiology table above."""
    return normalize(code) in MODIFIERS
