"""Code systems: ICD-10-CM (:mod:`icd10cm`), CPT/HCPCS (:mod:`cpt`) and modifiers (:mod:`modifiers`)."""

from . import cpt, icd10cm, modifiers

__all__ = ["cpt", "icd10cm", "modifiers", "check_code"]


def check_code(code: str, cpt_table: "cpt.CptTable | None" = None) -> dict:
    """Describe one code: its system, validity, billable flag, chapter and category."""
    table = cpt_table or cpt.CptTable()
    raw = str(code).strip()
    if cpt.kind(raw) and not ("." in raw or icd10cm.is_valid(raw)):
        return {"code": cpt.normalize(raw), "system": cpt.kind(raw), "valid": table.is_valid(raw),
                "billable": table.is_valid(raw), "subsection": cpt.subsection(raw)}
    if icd10cm.looks_like_icd(raw):
        c = icd10cm.normalize(raw)
        return {"code": c, "system": "icd10cm", "valid": icd10cm.is_valid(c), "billable": icd10cm.is_billable(c),
                "chapter": icd10cm.chapter(c), "block": icd10cm.block(c), "category": icd10cm.category(c)}
    if modifiers.looks_like_modifier(raw):
        m = modifiers.normalize(raw)
        return {"code": m, "system": "modifier", "valid": modifiers.is_known(m), "billable": False,
                "kind": modifiers.MODIFIERS[m].kind if modifiers.is_known(m) else None}
    return {"code": raw, "system": None, "valid": False, "billable": False}
