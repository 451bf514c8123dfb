"""ICD-10-CM: normalization, validity, hierarchy and the relation of two codes.

Backed by the official CDC/CMS release shipped in ``simple-icd-10-cm``; another release can be
loaded with :func:`load_release`.
"""

from __future__ import annotations

import importlib
import re
from enum import Enum
from xml.etree import ElementTree
from functools import lru_cache
from pathlib import Path

import simple_icd_10_cm as _cm

# Letter, digit, alphanumeric; or letter, letter, digit (FY2026 added QA0: genetic disorders).
_SHAPE = re.compile(r"^[A-Z](?:[0-9][0-9A-Z]|[A-Z][0-9])(\.[0-9A-Z]{1,4})?$")


class Relation(str, Enum):
    """How a predicted code relates to a reference code."""

    SAME = "same"
    ANCESTOR = "ancestor"  # the other code is less specific (a parent of the reference)
    DESCENDANT = "descendant"  # the other code is more specific
    SIBLING = "sibling"  # same 3-character category, neither contains the other
    SAME_CHAPTER = "same_chapter"
    UNRELATED = "unrelated"


_CACHE = 1 << 18  # bounded: parse() feeds arbitrary model output through these look-ups


@lru_cache(maxsize=_CACHE)
def normalize(code: str) -> str:
    """Return ``code`` upper-cased, without spaces, with the dot after the third character."""
    raw = re.sub(r"[\s.]", "", str(code)).upper()
    return raw if len(raw) <= 3 else f"{raw[:3]}.{raw[3:]}"


def looks_like_icd(token: str) -> bool:
    """True when ``token`` has the shape of an ICD-10-CM code (letter, digit, alnum, ...)."""
    return bool(_SHAPE.match(normalize(token))) and not token.strip().isdigit()


def is_valid(code: str) -> bool:
    """True when ``code`` is a category or subcategory (billable or not) of the loaded release."""
    return _is_valid(normalize(code))


@lru_cache(maxsize=_CACHE)
def _is_valid(c: str) -> bool:
    return bool(_SHAPE.match(c)) and _cm.is_valid_item(c) and _cm.is_category_or_subcategory(c)


def is_billable(code: str) -> bool:
    """True when ``code`` is valid and a leaf (a code that may be reported on a claim)."""
    return _is_billable(normalize(code))


@lru_cache(maxsize=_CACHE)
def _is_billable(c: str) -> bool:
    return _is_valid(c) and _cm.is_leaf(c)


def category(code: str) -> str:
    """The 3-character category (``M25.511`` -> ``M25``); defined for any code-shaped string."""
    return normalize(code)[:3]


@lru_cache(maxsize=_CACHE)
def _category_ancestors(cat: str) -> tuple[str, ...]:
    return tuple(_cm.get_ancestors(cat)) if _cm.is_valid_item(cat) and _cm.is_category(cat) else ()


def chapter(code: str) -> str | None:
    """The chapter number (``"13"``) of the code's category, or None if the category does not exist."""
    anc = _category_ancestors(category(code))
    return anc[-1] if anc else None


def block(code: str) -> str | None:
    """The block (``"M20-M25"``) of the code's category, or None if the category does not exist."""
    anc = _category_ancestors(category(code))
    return anc[-2] if len(anc) >= 2 else None


def ancestors(code: str) -> tuple[str, ...]:
    """Less specific codes above ``code``, nearest first, up to its category (blocks excluded)."""
    return _ancestors(normalize(code))


@lru_cache(maxsize=_CACHE)
def _ancestors(c: str) -> tuple[str, ...]:
    if not _is_valid(c):
        return ()
    # A block holding one category shares its name (B99 in block "B99"): drop it and the code itself.
    found = (a for a in _cm.get_ancestors(c) if a != c and _cm.is_category_or_subcategory(a))
    return tuple(dict.fromkeys(found))


def descendants(code: str) -> tuple[str, ...]:
    """More specific codes below ``code`` (empty for a leaf or an invalid code)."""
    return _descendants(normalize(code))


@lru_cache(maxsize=4096)
def _descendants(c: str) -> tuple[str, ...]:
    return tuple(_cm.get_descendants(c)) if _is_valid(c) else ()


def billable_in_category(code: str) -> tuple[str, ...]:
    """Billable codes of the code's 3-character category (its siblings and relatives)."""
    cat = category(code)
    if not is_valid(cat):
        return ()
    return tuple(d for d in ((cat,) + descendants(cat)) if is_billable(d))


def description(code: str) -> str:
    """The official short description; raises KeyError naming the code when it is not valid."""
    c = normalize(code)
    if not is_valid(c):
        raise KeyError(f"ICD-10-CM code {code!r} is not in the loaded release")
    return _cm.get_description(c)


def relation(reference: str, other: str) -> Relation:
    """How ``other`` relates to ``reference`` (e.g. gold vs predicted)."""
    a, b = normalize(reference), normalize(other)
    if a == b:
        return Relation.SAME
    if b in _ancestors(a):
        return Relation.ANCESTOR
    if a in _ancestors(b):
        return Relation.DESCENDANT
    if a[:3] == b[:3]:
        return Relation.SIBLING
    ca, cb = chapter(a), chapter(b)
    if ca is not None and ca == cb:
        return Relation.SAME_CHAPTER
    return Relation.UNRELATED


def all_billable() -> tuple[str, ...]:
    """Every billable code of the loaded release."""
    return _all_billable()


@lru_cache(maxsize=1)
def _all_billable() -> tuple[str, ...]:
    # dict.fromkeys: a block holding one category has the category's name, so the walk meets it twice
    return tuple(dict.fromkeys(
        c for c in _cm.get_all_codes(with_dots=True) if _cm.is_category_or_subcategory(c) and _cm.is_leaf(c)))


def all_valid() -> tuple[str, ...]:
    """Every valid code of the loaded release: categories and subcategories, billable or not."""
    return _all_valid()


@lru_cache(maxsize=1)
def _all_valid() -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for c in _cm.get_all_codes(with_dots=True) if _cm.is_category_or_subcategory(c)))


def release_name() -> str:
    """Name of the loaded release file (for manifests)."""
    return _release["name"]


_SHIPPED = "simple-icd-10-cm:" + importlib.import_module("simple_icd_10_cm.simple_icd_10_cm") \
    ._classification_data_package_file_name.removesuffix(".xml")
_release = {"name": _SHIPPED}


def load_release(tabular_xml: str | None = None, code_list: str | None = None) -> None:
    """Switch to another official release and clear every cache; no arguments = the shipped one.

    ``tabular_xml`` is the CMS tabular XML (``icd10cm_tabular_2027.xml``); ``code_list`` the code
    list of the same release (``icd10cm_codes_2027.txt``: one code a line, description after a
    space), which confirms the codes built from 7th-character rules. Both or neither.
    """
    if (tabular_xml is None) != (code_list is None):
        missing = "code_list" if code_list is None else "tabular_xml"
        raise ValueError(f"load_release: {missing} is required with the other file "
                         f"(tabular_xml={tabular_xml!r}, code_list={code_list!r})")
    for path in (tabular_xml, code_list):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"load_release: no such file {str(path)!r}")
    try:
        _cm.change_version(all_codes_file_path=None if code_list is None else str(code_list),
                           classification_data_file_path=None if tabular_xml is None else str(tabular_xml))
    except ElementTree.ParseError as exc:  # raised before anything is replaced: the old release stays
        raise ValueError(f"load_release: {str(tabular_xml)!r} is not a tabular XML file: {exc}") from exc
    finally:  # even a half-loaded release must not be answered from the old one's caches
        for fn in (_is_valid, _is_billable, _category_ancestors, _ancestors, _descendants, _all_billable, _all_valid):
            fn.cache_clear()
    _release["name"] = _SHIPPED if tabular_xml is None else str(tabular_xml)
