"""The report wording of the synthetic cases: reason, impression and label forms, and template values."""

LOBES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
RIBS = ("fifth", "sixth", "seventh", "eighth", "ninth")
REASON_FORMS = ("{Name}.", "{Name}, evaluate.", "{age} y/o {sexw} with {name}.", "{Name}; rule out {ruleout}.",
                "Hx: {name}.", "{Name} x {days} days.")
NORMAL_IMPRESSIONS = ("No acute abnormality.", "Negative examination.", "No acute findings to explain the {name}.",
                      "Normal study.", "No significant abnormality identified.")
REGION_NORMAL_IMPRESSIONS = {
    "chest": ("No acute cardiopulmonary process.",), "chest_ct": ("No acute intrathoracic abnormality.",),
    "head": ("No acute intracranial abnormality.",), "brain_mr": ("Normal MRI of the brain.",),
    "abdomen": ("No acute abdominal or pelvic abnormality.",), "joint": ("No acute fracture or dislocation.",),
    "veins": ("No deep vein thrombosis.",), "arteries": ("No hemodynamically significant arterial disease.",),
    "breast": ("No mammographic evidence of malignancy. BI-RADS 1: negative.", "Benign findings. BI-RADS 2."),
    "lspine": ("No acute abnormality of the lumbar spine.",), "cspine": ("No acute cervical spine abnormality.",),
    "ob": ("Single live intrauterine pregnancy, size equals dates.",),
}
IMPRESSION_TAILS = ("", "", "", "", " Clinical correlation recommended.", " Follow-up as clinically indicated.",
                    " Results communicated to the ordering provider.")
EXAM_LABELS = ("EXAM", "PROCEDURE", "STUDY")
HISTORY_LABELS = ("CLINICAL HISTORY", "INDICATION", "HISTORY", "REASON FOR STUDY")
COMPARISONS = ("None.", "None available.", "Prior study from {prior}.", "Outside images from {prior}.")
# A reason names a rule-out only when the indication has one; a status (screening, history) never.
REASON_FORMS_PLAIN = tuple(f for f in REASON_FORMS if "ruleout" not in f)
REASON_FORMS_STATUS = ("{Name}.", "{age} y/o {sexw}, {name}.", "Hx: {name}.")

TRACERS = {"nm_bone": "Tc-99m MDP", "nm_mpi": "Tc-99m sestamibi", "nm_hida": "Tc-99m mebrofenin",
           "nm_thyroid": "I-123", "nm_vq": "Tc-99m MAA", "pet_ct": "F-18 FDG",
           "nm_gastric": "Tc-99m sulfur colloid in egg meal"}
# Every value a template may name, drawn on first use so findings and impression of a case agree.
FILL_RULES = {
    "small": lambda d, e: d.int(3, 9), "mm": lambda d, e: d.int(5, 28), "cm": lambda d, e: d.real(1.1, 9.8),
    "lobe": lambda d, e: d.pick(LOBES), "rib": lambda d, e: d.pick(RIBS),
    "llevel": lambda d, e: d.pick(("L3-L4", "L4-L5", "L5-S1")), "clevel": lambda d, e: d.pick(("C4-C5", "C5-C6", "C6-C7")),
    "vert": lambda d, e: d.pick(("L1", "L2", "L3", "L4")), "pct": lambda d, e: d.int(20, 60),
    "spleen": lambda d, e: d.real(13.5, 19.0), "aorta": lambda d, e: d.real(3.1, 5.4),
    "prostate": lambda d, e: d.int(45, 110), "stenosis": lambda d, e: d.pick(("50-69%", "70-99%")),
    "tscore": lambda d, e: d.real(2.5, 3.6), "pressure": lambda d, e: d.int(28, 42), "cc": lambda d, e: d.int(30, 50),
    "weeks": lambda d, e: d.int(*(e.weeks or (20, 20))), "fhr": lambda d, e: d.int(120, 170),
    "ef": lambda d, e: d.int(45, 72), "ml": lambda d, e: d.pick((75, 80, 100)), "gad": lambda d, e: d.pick((7, 10, 15)),
    "mci": lambda d, e: d.pick((5, 10, 20, 25)), "fluoro": lambda d, e: d.real(0.4, 4.5), "days": lambda d, e: d.int(2, 14),
    "tracer": lambda d, e: TRACERS.get(e.key, "radiotracer"),
    "contrast_agent": lambda d, e: d.pick(("thin and thick barium", "barium of varied consistencies",
                                           "water-soluble contrast")),
    "prior": lambda d, e: f"{d.int(2019, 2022)}-{d.int(1, 12):02d}-{d.int(1, 28):02d}",
}
