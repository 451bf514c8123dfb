"""Code systems: ICD-10-CM (:mod:`icd10cm`), CPT/HCPCS (:mod:`cpt`) and modifiers (:mod:`modifiers`)."""

from . import cpt, icd10cm, modifiers

__all__ = ["cpt", "icd10cm", "modifiers", "check_code"]


def check_code(code: str, cpt_table: "cpt.CptTable | None" = None) -> dict:
    """Describe one code: system, validity, billable flag, chapter, block, category, subsection, kind.

    Every answer has the same keys (None where a key does not apply to the system). A token that
    is both HCPCS-shaped and a valid ICD-10-CM code without its dot (``R1084``) is read as ICD-10-CM.
    """
    table = cpt_table or cpt.CptTable()
    raw = str(code).strip()
    out = {"code": raw, "system": None, "valid": False, "billable": False, "chapter": None, "block": None,
           "category": None, "subsection": None, "kind": None, "cpt_table": None}
    if cpt.kind(raw) and not ("." in raw or icd10cm.is_valid(raw)):
        c = cpt.normalize(raw)
        # a CPT code is billable when it is valid; shape-only validity unless a licensed table is loaded
        out.update(code=c, system=cpt.kind(c), valid=table.is_valid(c), billable=table.is_valid(c),
                   subsection=cpt.subsection(c), cpt_table=table.source)
    elif icd10cm.looks_like_icd(raw):
        c = icd10cm.normalize(raw)
        out.update(code=c, system="icd10cm", valid=icd10cm.is_valid(c), billable=icd10cm.is_billable(c),
                   chapter=icd10cm.chapter(c), block=icd10cm.block(c), category=icd10cm.category(c))
    elif modifiers.looks_like_modifier(raw):
        m = modifiers.normalize(raw)
        out.update(code=m, system="modifier", valid=modifiers.is_known(m),
                   kind=modifiers.MODIFIERS[m].kind if modifiers.is_known(m) else None)
    return out
