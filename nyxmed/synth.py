"""Synthetic radiology cases: the embedded default data set (no patient data, all invented).

The generator is table driven: an :class:`ExamType` fixes the CPT code(s) and the laterality rule,
a :class:`Condition` fixes an ICD-10-CM code and the words that name it in the report, and the
place of service fixes the component modifier. So the mapping text -> code line is learnable.
Exam descriptions are our own plain wording; no CPT descriptor text ships here.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Mapping

from nyxmed.cases import Case
from nyxmed.codeline import CodeLine

SIDES = {"R": "right", "L": "left", "B": "bilateral"}
SIDE_MODIFIER = {"R": "RT", "L": "LT", "B": "50"}
MODALITIES = ("radiograph", "ct", "mri", "ultrasound", "mammography", "nuclear_medicine", "fluoroscopy",
              "interventional", "densitometry")
LAYOUTS = ("explicit", "embedded")


@dataclass(frozen=True)
class Condition:
    """One codable condition: its ICD-10-CM code (or codes by side) and the words that name it.

    ``kind`` decides when it is coded: ``symptom`` only when the study explains nothing,
    ``finding`` when the report states it, ``status`` (screening, history, gestation) always.
    """

    key: str
    icd: str | Mapping[str, str]  # a code, or codes by side: R, L, optional B (bilateral), U (unspecified side)
    kind: str
    names: tuple[str, ...]  # how the reason for exam / impression names it; may use {side}
    findings: tuple[str, ...] = ()  # FINDINGS sentences that state it
    impressions: tuple[str, ...] = ()
    unspec: str | None = None  # the less specific code a first-pass coder might have used
    avoid: tuple[str, ...] = ()  # words of normal sentences that would contradict it
    ruleout: tuple[str, ...] = ()  # "rule out" phrases of the reason for exam (never coded)
    sex: str | None = None  # F or M where only one sex can have it

    @property
    def category(self) -> str:
        """The 3-character ICD-10-CM category (the same for every side)."""
        return (self.icd if isinstance(self.icd, str) else self.icd["R"])[:3]

    @property
    def sided(self) -> bool:
        return not isinstance(self.icd, str)

    def code(self, side: str | None, fill: Mapping[str, object]) -> str:
        """The gold code for a side (R/L/B; B falls back to the caller's choice of R or L)."""
        code = self.icd if isinstance(self.icd, str) else self.icd[side or "R"]
        return code.format_map(fill) if "{" in code else code

    def unspecified(self, side: str | None) -> str | None:
        """The less specific code of the same category (unspecified side or type), if any."""
        if isinstance(self.icd, str):
            return self.unspec
        return self.icd.get("U") or self.unspec


def _sided(template: str, b: str | None = None, u: str | None = "9") -> dict[str, str]:
    """Codes by side from a template whose ``{}`` is the side character (1 right, 2 left)."""
    codes = {"R": template.format("1"), "L": template.format("2")}
    if b:
        codes["B"] = template.format(b)
    if u:
        codes["U"] = template.format(u) if len(u) == 1 else u
    return codes


def _c(key, icd, kind, names, findings=(), impressions=(), **kw) -> Condition:
    return Condition(key, icd, kind, tuple(names), tuple(findings), tuple(impressions), **kw)


S, F, T = "symptom", "finding", "status"

# ----------------------------------------------------------------------------- conditions
CONDITIONS: dict[str, Condition] = {c.key: c for c in (
    # --- symptoms (coded when the study is negative)
    _c("cough", "R05.9", S, ("cough", "persistent cough")),
    _c("sob", "R06.02", S, ("shortness of breath", "shortness of breath on exertion"), ruleout=("pneumonia",)),
    _c("chest_pain", "R07.9", S, ("chest pain", "acute chest pain"), ruleout=("pulmonary embolism",)),
    _c("fever", "R50.9", S, ("fever", "fever of unclear source"), ruleout=("pneumonia",)),
    _c("hemoptysis", "R04.2", S, ("hemoptysis",)),
    _c("abd_pain", "R10.84", S, ("generalized abdominal pain", "diffuse abdominal pain")),
    _c("rlq_pain", "R10.31", S, ("right lower quadrant pain", "RLQ pain"), unspec="R10.9",
       ruleout=("appendicitis",)),
    _c("llq_pain", "R10.32", S, ("left lower quadrant pain", "LLQ pain"), unspec="R10.9",
       ruleout=("diverticulitis",)),
    _c("ruq_pain", "R10.11", S, ("right upper quadrant pain", "RUQ pain"), unspec="R10.10",
       ruleout=("cholecystitis",)),
    _c("epigastric_pain", "R10.13", S, ("epigastric pain",), unspec="R10.10", ruleout=("pancreatitis",)),
    _c("pelvic_pain", _sided("R10.2{}", b="3", u="0"), S, ("{side} pelvic pain",), ruleout=("ovarian torsion",)),
    _c("nausea_vomiting", "R11.2", S, ("nausea and vomiting", "nausea with vomiting")),
    _c("hematuria", "R31.9", S, ("hematuria",), ruleout=("renal stone",)),
    _c("gross_hematuria", "R31.0", S, ("gross hematuria",), unspec="R31.9"),
    _c("pmb", "N95.0", S, ("postmenopausal bleeding",)),
    _c("headache", "R51.9", S, ("headache", "severe headache"), ruleout=("hemorrhage",)),
    _c("dizziness", "R42", S, ("dizziness", "vertigo and dizziness")),
    _c("syncope", "R55", S, ("syncope", "syncopal episode")),
    _c("ams", "R41.82", S, ("altered mental status",), ruleout=("stroke",)),
    _c("head_injury", "S09.90XA", S, ("head injury after a fall", "head trauma")),
    _c("neck_pain", "M54.2", S, ("neck pain", "cervicalgia")),
    _c("low_back_pain", "M54.50", S, ("low back pain", "lumbago")),
    _c("thoracic_pain", "M54.6", S, ("thoracic back pain", "mid back pain")),
    _c("sciatica", _sided("M54.3{}", u="0"), S, ("{side} sciatica", "{side} sided sciatica")),
    _c("cerv_radic", "M54.12", S, ("cervical radiculopathy", "radiating arm pain with cervical radiculopathy")),
    _c("knee_pain", _sided("M25.56{}"), S, ("{side} knee pain",), ruleout=("fracture",)),
    _c("shoulder_pain", _sided("M25.51{}"), S, ("{side} shoulder pain",)),
    _c("hip_pain", _sided("M25.55{}"), S, ("{side} hip pain",), ruleout=("fracture",)),
    _c("ankle_pain", _sided("M25.57{}"), S, ("{side} ankle pain",), ruleout=("fracture",)),
    _c("wrist_pain", _sided("M25.53{}"), S, ("{side} wrist pain",), ruleout=("fracture",)),
    _c("elbow_pain", _sided("M25.52{}"), S, ("{side} elbow pain",)),
    _c("hand_pain", _sided("M79.64{}", u="3"), S, ("{side} hand pain",)),
    _c("foot_pain", _sided("M79.67{}", u="3"), S, ("{side} foot pain",)),
    _c("leg_pain", {"R": "M79.604", "L": "M79.605", "U": "M79.606"}, S,
       ("{side} leg pain", "pain in the {side} leg"), ruleout=("DVT",)),
    _c("arm_pain", {"R": "M79.601", "L": "M79.602", "U": "M79.603"}, S, ("{side} arm pain",), ruleout=("DVT",)),
    _c("leg_swelling", "R60.0", S, ("leg swelling", "lower extremity edema"), ruleout=("DVT",)),
    _c("claudication", "I73.9", S, ("claudication", "intermittent claudication")),
    _c("carotid_bruit", "R09.89", S, ("carotid bruit",)),
    _c("tia", "G45.9", S, ("transient ischemic attack", "TIA")),
    _c("breast_lump", {"R": "N63.10", "L": "N63.20", "U": "N63.0"}, S,
       ("palpable lump in the {side} breast", "{side} breast lump")),
    _c("breast_pain", "N64.4", S, ("breast pain", "mastodynia")),
    _c("scrotal_pain", _sided("N50.81{}"), S, ("{side} testicular pain",), ruleout=("torsion",)),
    _c("dysphagia", "R13.10", S, ("dysphagia", "difficulty swallowing")),
    _c("oropharyngeal_dysphagia", "R13.12", S, ("oropharyngeal dysphagia", "coughing with swallowing"),
       unspec="R13.10"),
    _c("nausea", "R11.0", S, ("nausea", "chronic nausea")),
    _c("uti", "N39.0", S, ("recurrent urinary tract infection", "febrile urinary tract infection")),
    _c("infertility", "N97.9", S, ("female infertility", "primary infertility")),
    _c("neck_mass", "R22.1", S, ("palpable neck mass", "neck swelling")),
    _c("weight_loss", "R63.4", S, ("abnormal weight loss", "unintentional weight loss")),
    _c("soft_tissue_mass", {"R": "R22.41", "L": "R22.42", "U": "R22.40"}, S,
       ("palpable lump of the {side} lower extremity", "{side} thigh lump")),
    # --- status codes (always coded when stated)
    _c("screen_breast", "Z12.31", T, ("screening mammogram", "routine screening", "annual screening mammography")),
    _c("fam_hx_breast", "Z80.3", T, ("family history of breast cancer", "mother with breast cancer")),
    _c("hx_breast_ca", "Z85.3", T, ("personal history of breast cancer", "history of treated breast cancer")),
    _c("screen_lung", "Z12.2", T, ("lung cancer screening", "annual low-dose lung screening")),
    _c("former_smoker", "Z87.891", T, ("former smoker, 30 pack-years", "history of tobacco use, quit 5 years ago")),
    _c("current_smoker", "F17.210", T, ("current cigarette smoker", "active smoker, 1 pack per day")),
    _c("screen_osteo", "Z13.820", T, ("osteoporosis screening", "screening for osteoporosis")),
    _c("menopause", "Z78.0", T, ("postmenopausal", "postmenopausal status")),
    _c("preg_first", "Z34.81", T, ("routine prenatal care, first trimester", "first-trimester pregnancy dating")),
    _c("preg_second", "Z34.82", T, ("routine prenatal care, second trimester", "anatomy survey")),
    _c("anatomy_screen", "Z36.3", T, ("screening for fetal malformations", "fetal anatomic survey")),
    _c("weeks", "Z3A.{weeks:02d}", T, ("{weeks} weeks gestation", "gestational age {weeks} weeks")),
    _c("esrd_dialysis", "N18.6", T, ("end stage renal disease on hemodialysis", "ESRD on dialysis")),
    _c("lung_ca_hx", "C34.11", T, ("right upper lobe lung cancer, staging", "known RUL lung cancer"),
       unspec="C34.10"),
    _c("prostate_ca", "C61", T, ("prostate cancer", "known prostate carcinoma"), sex="M"),
    _c("breast_ca", {"R": "C50.911", "L": "C50.912", "U": "C50.919"}, T, ("{side} breast cancer",), sex="F"),
    _c("picc_abx", "Z79.2", T, ("long-term intravenous antibiotics", "needs IV antibiotics for 6 weeks")),
    # --- findings: chest
    _c("pneumonia", "J18.9", F, ("pneumonia",),
       ("Patchy airspace opacity in the {lobe} compatible with pneumonia.",
        "Consolidation in the {lobe}, consistent with pneumonia."),
       ("{lobe} pneumonia.", "Findings consistent with pneumonia in the {lobe}."),
       avoid=("clear", "consolidation", "airspace", "pneumonia")),
    _c("lobar_pneumonia", "J18.1", F, ("lobar pneumonia",),
       ("Dense lobar consolidation of the {lobe} with air bronchograms, lobar pneumonia.",),
       ("Lobar pneumonia of the {lobe}.",), unspec="J18.9", avoid=("clear", "consolidation", "airspace", "pneumonia")),
    _c("effusion", "J90", F, ("pleural effusion",),
       ("Small {side} pleural effusion.", "Moderate {side} pleural effusion with adjacent atelectasis."),
       ("{Side} pleural effusion.",), avoid=("clear", "effusion",)),
    _c("pneumothorax", "J93.9", F, ("pneumothorax",),
       ("Small {side} apical pneumothorax measuring {small} mm.",
        "Thin pleural line at the {side} apex with absent lung markings beyond it, pneumothorax of {small} mm.",),
       ("{Side} pneumothorax.",), avoid=("pneumothorax",)),
    _c("spont_ptx", "J93.11", F, ("primary spontaneous pneumothorax",),
       ("{Side} apical pneumothorax of {small} mm without trauma, primary spontaneous pneumothorax.",),
       ("Primary spontaneous pneumothorax on the {side}.",), unspec="J93.9", avoid=("pneumothorax",)),
    _c("nodule", "R91.1", F, ("solitary pulmonary nodule",),
       ("A {mm} mm solitary pulmonary nodule in the {lobe}.", "Solitary noncalcified nodule in the {lobe}, {mm} mm."),
       ("{mm} mm solitary pulmonary nodule in the {lobe}; follow-up CT recommended.",), avoid=("clear", "nodule",)),
    _c("lung_mass", "R91.8", F, ("lung mass",),
       ("Spiculated {cm} cm mass in the {lobe}.", "Lobulated lung mass in the {lobe} measuring {cm} cm."),
       ("{cm} cm lung mass in the {lobe}, suspicious for malignancy.",), avoid=("clear", "mass", "nodule")),
    _c("pe", "I26.99", F, ("pulmonary embolism",),
       ("Filling defects in the {side} lower lobe segmental pulmonary arteries, acute pulmonary embolism.",
        "Acute pulmonary embolism involving {side} segmental branches. RV/LV ratio is normal."),
       ("Acute pulmonary embolism without right heart strain.",), avoid=("embolism", "filling defect")),
    _c("pe_vq", "I26.99", F, ("pulmonary embolism",),
       ("Multiple mismatched segmental perfusion defects in the {side} lung, high probability for pulmonary "
        "embolism.",),
       ("High probability for acute pulmonary embolism.",), avoid=("embolism", "perfusion", "matched")),
    _c("emphysema", "J43.9", F, ("emphysema",),
       ("Centrilobular emphysema, upper lobe predominant.", "Hyperinflated lungs with emphysema."),
       ("Emphysema.",), avoid=("clear", "emphysema",)),
    _c("pulm_edema", "J81.0", F, ("acute pulmonary edema",),
       ("Interstitial and alveolar edema with vascular congestion, acute pulmonary edema.",),
       ("Acute pulmonary edema.",), avoid=("clear", "edema", "congestion")),
    _c("cardiomegaly", "I51.7", F, ("cardiomegaly",),
       ("The cardiac silhouette is enlarged, cardiomegaly.",
        "Cardiomegaly with a cardiothoracic ratio above 0.5.",), ("Cardiomegaly.",), avoid=("cardiac", "heart")),
    _c("atelectasis", "J98.11", F, ("atelectasis",),
       ("Linear atelectasis at the {side} lung base.",
        "Plate-like atelectasis in the {side} lower lung.", "Subsegmental atelectasis in the {lobe}."),
       ("Atelectasis.", "Mild atelectasis at the {side} base."), avoid=("clear", "atelectasis",)),
    _c("rib_fx", _sided("S22.3{}XA"), F, ("rib fracture",),
       ("Acute nondisplaced fracture of the {side} {rib} rib.",), ("Acute {side} {rib} rib fracture.",),
       avoid=("fracture", "osseous")),
    _c("hiatal_hernia", "K44.9", F, ("hiatal hernia",),
       ("Small hiatal hernia.", "Moderate sliding hiatal hernia."), ("Hiatal hernia.",), avoid=("hernia",)),
    _c("coronary_calc", "I25.10", F, ("coronary artery disease",),
       ("Coronary artery calcifications in keeping with coronary artery disease.",),
       ("Coronary artery disease.",), avoid=("coronary",)),
    # --- abdomen and pelvis
    _c("appendicitis", "K35.80", F, ("acute appendicitis",),
       ("The appendix is dilated to {small} mm with periappendiceal fat stranding, acute appendicitis. No abscess.",
        "Fluid-filled noncompressible appendix measuring {small} mm with surrounding inflammation, consistent with acute appendicitis.",),
       ("Acute appendicitis without perforation or abscess.",), avoid=("appendix",)),
    _c("diverticulitis", "K57.32", F, ("sigmoid diverticulitis",),
       ("Sigmoid diverticula with pericolonic stranding, acute diverticulitis. No abscess or free air.",
        "Focal wall thickening of the sigmoid colon at an inflamed diverticulum, acute diverticulitis without abscess.",),
       ("Acute uncomplicated sigmoid diverticulitis.",), unspec="K57.92", avoid=("diverticul", "bowel")),
    _c("diverticulosis", "K57.30", F, ("colonic diverticulosis",),
       ("Scattered colonic diverticulosis without inflammation.",), ("Colonic diverticulosis.",),
       avoid=("diverticul",)),
    _c("kidney_stone", "N20.0", F, ("kidney stone", "nephrolithiasis"),
       ("A {small} mm nonobstructing stone in the {side} kidney, nephrolithiasis.",
        "{Side} renal calculus measuring {small} mm."),
       ("{Side} nephrolithiasis.", "Nonobstructing {side} kidney stone."), unspec="N20.9",
       avoid=("stone", "calculus", "kidney", "renal")),
    _c("ureter_stone", "N20.1", F, ("ureteral stone",),
       ("A {small} mm stone in the distal {side} ureter.",), ("{Side} distal ureteral stone.",),
       unspec="N20.9", avoid=("stone", "calculus", "ureter")),
    _c("hydronephrosis", "N13.30", F, ("hydronephrosis",),
       ("Mild {side} hydronephrosis.",
        "Dilated {side} renal collecting system, hydronephrosis.", "Moderate {side} hydronephrosis."), ("{Side} hydronephrosis.",),
       avoid=("hydronephrosis",)),
    _c("renal_cyst", "N28.1", F, ("renal cyst",),
       ("Simple {cm} cm cyst of the {side} kidney.",), ("Simple {side} renal cyst.",),
       avoid=("kidney", "renal")),
    _c("gallstones", "K80.20", F, ("cholelithiasis", "gallstones"),
       ("Multiple gallstones without gallbladder wall thickening, cholelithiasis.",
        "Layering gallstones, the largest {small} mm. No wall thickening. Cholelithiasis.",
        "A {small} mm gallstone in the gallbladder lumen. No pericholecystic fluid."),
       ("Cholelithiasis without cholecystitis.",), avoid=("gallbladder", "gallstone")),
    _c("acute_chole", "K81.0", F, ("acute cholecystitis",),
       ("Gallbladder distension with wall thickening to {small} mm and pericholecystic fluid, acute cholecystitis. "
        "No gallstones.",),
       ("Acute acalculous cholecystitis.",), unspec="K81.9", avoid=("gallbladder", "gallstone")),
    _c("chronic_chole", "K81.1", F, ("chronic cholecystitis",),
       ("Gallbladder ejection fraction of {small}% indicating chronic cholecystitis.",),
       ("Chronic cholecystitis.",), unspec="K81.9", avoid=("gallbladder", "ejection")),
    _c("fatty_liver", "K76.0", F, ("hepatic steatosis", "fatty liver"),
       ("Diffuse hepatic steatosis.", "Diffuse fatty infiltration of the liver, fatty liver."), ("Hepatic steatosis.",),
       avoid=("liver", "hepatic")),
    _c("liver_hemangioma", "D18.03", F, ("hepatic hemangioma",),
       ("A {cm} cm hemangioma in the right hepatic lobe with peripheral nodular enhancement.",),
       ("Hepatic hemangioma.",), avoid=("liver", "hepatic")),
    _c("pancreatitis", "K85.90", F, ("acute pancreatitis",),
       ("Peripancreatic fat stranding and edema, acute pancreatitis. No necrosis.",
        "The pancreas is edematous with peripancreatic fluid, acute pancreatitis. Normal enhancement.",),
       ("Acute interstitial pancreatitis.",), avoid=("pancrea",)),
    _c("sbo", "K56.600", F, ("partial small bowel obstruction",),
       ("Dilated small bowel loops to {cm} cm with a transition point in the {side} abdomen and distal decompression, partial small bowel obstruction.",),
       ("Partial small bowel obstruction.",), unspec="K56.609", avoid=("bowel", "obstruction")),
    _c("splenomegaly", "R16.1", F, ("splenomegaly",),
       ("The spleen is enlarged measuring {spleen} cm, splenomegaly.",), ("Splenomegaly.",), avoid=("spleen",)),
    _c("ascites", "R18.8", F, ("ascites",),
       ("Moderate ascites in the abdomen and pelvis.",), ("Ascites.",), avoid=("ascites", "free fluid")),
    _c("umbilical_hernia", "K42.9", F, ("umbilical hernia",),
       ("Fat-containing umbilical hernia.",), ("Umbilical hernia.",), avoid=("hernia",)),
    _c("inguinal_hernia", "K40.90", F, ("inguinal hernia",),
       ("Fat-containing {side} inguinal hernia without obstruction.",), ("{Side} inguinal hernia.",),
       avoid=("hernia",)),
    _c("aaa", "I71.40", F, ("abdominal aortic aneurysm",),
       ("Infrarenal abdominal aortic aneurysm measuring {aorta} cm.",), ("{aorta} cm abdominal aortic aneurysm.",),
       avoid=("aorta", "aneurysm")),
    _c("colitis", "K52.9", F, ("colitis",),
       ("Wall thickening of the descending colon, colitis.",), ("Colitis of the descending colon.",),
       avoid=("bowel", "colon")),
    _c("abscess", "K65.1", F, ("peritoneal abscess",),
       ("Rim-enhancing {cm} cm peritoneal abscess in the pelvis.",), ("Pelvic peritoneal abscess.",),
       avoid=("abscess", "fluid collection")),
    _c("liver_abscess", "K75.0", F, ("liver abscess",),
       ("Complex {cm} cm liver abscess in the right lobe.",), ("Liver abscess.",), avoid=("liver", "abscess")),
    _c("ovarian_cyst", {"R": "N83.201", "L": "N83.202", "U": "N83.209"}, F, ("ovarian cyst",),
       ("Simple {cm} cm cyst of the {side} ovary.",
        "Anechoic {cm} cm {side} ovarian cyst with posterior acoustic enhancement.",), ("{Side} ovarian cyst.",), avoid=("ovar", "adnexa")),
    _c("fibroid", "D25.1", F, ("intramural fibroid", "uterine leiomyoma"),
       ("Intramural fibroid in the uterine body measuring {cm} cm.",
        "Hypoechoic intramural fibroid of {cm} cm in the posterior uterine wall.",), ("Intramural uterine fibroid.",),
       unspec="D25.9", avoid=("uterus", "myometrium", "fibroid")),
    _c("endometrial_thick", "R93.89", F, ("thickened endometrium",),
       ("The endometrial stripe is thickened at {small} mm.",), ("Thickened endometrium; consider biopsy.",),
       avoid=("endometri",)),
    _c("hydrocele", "N43.3", F, ("hydrocele",),
       ("Moderate {side} hydrocele.",), ("{Side} hydrocele.",), avoid=("hydrocele", "fluid")),
    _c("varicocele", "I86.1", F, ("varicocele",),
       ("Dilated veins of the {side} pampiniform plexus up to {small} mm, varicocele.",), ("{Side} varicocele.",),
       avoid=("varicocele",)),
    _c("epididymitis", "N45.1", F, ("epididymitis",),
       ("The {side} epididymis is enlarged and hyperemic, epididymitis.",), ("{Side} epididymitis.",),
       avoid=("epididym",)),
    _c("bph", "N40.0", F, ("enlarged prostate",),
       ("The prostate is enlarged measuring {prostate} mL.",), ("Enlarged prostate.",), avoid=("prostate",), sex="M"),
    _c("tubal_infert", "N97.1", F, ("tubal infertility",),
       ("Nonfilling of the {side} fallopian tube without free spill, tubal occlusion.",),
       ("{Side} tubal occlusion; tubal factor infertility.",), unspec="N97.9", avoid=("tube", "spill")),
    _c("vur", "N13.70", F, ("vesicoureteral reflux",),
       ("Reflux into the {side} ureter and renal collecting system during voiding, vesicoureteral reflux.",),
       ("{Side} vesicoureteral reflux.",), avoid=("reflux",)),
    _c("threatened_ab", "O20.0", F, ("threatened abortion",),
       ("Live intrauterine pregnancy with a small subchorionic hemorrhage; threatened abortion in the setting of bleeding.",),
       ("Threatened abortion with subchorionic hemorrhage.",), unspec="O20.9", avoid=("hemorrhage",)),
    # --- head, neck, neuro
    _c("stroke", _sided("I63.51{}", u="9"), F, ("acute infarct",),
       ("Acute infarct in the {side} middle cerebral artery territory.",
        "Loss of gray-white differentiation in the {side} MCA territory consistent with acute infarct."),
       ("Acute {side} MCA territory infarct.",), avoid=("infarct", "diffusion", "gray-white")),
    _c("ich", "I61.9", F, ("intracerebral hemorrhage",),
       ("{cm} cm intraparenchymal hemorrhage in the {side} basal ganglia.",
        "Hyperdense {cm} cm intracerebral hemorrhage in the {side} thalamus with surrounding edema.",),
       ("Acute nontraumatic intracerebral hemorrhage.",), avoid=("hemorrhage",)),
    _c("sdh", "S06.5X0A", F, ("traumatic subdural hematoma",),
       ("Acute {side} subdural hematoma measuring {small} mm in thickness after the fall.",
        "Crescentic hyperdense {side} subdural hematoma, {small} mm thick, after the fall.",),
       ("Acute traumatic {side} subdural hematoma.",), avoid=("hemorrhage", "hematoma", "extra-axial")),
    _c("small_vessel", "I67.82", F, ("chronic small vessel ischemic disease",),
       ("Periventricular white matter hypodensities, chronic small vessel ischemic disease.",),
       ("Chronic small vessel ischemic disease.",), avoid=("white matter",)),
    _c("brain_lesion", "R90.0", F, ("intracranial mass",),
       ("Enhancing {cm} cm intracranial mass in the {side} frontal lobe with surrounding edema.",),
       ("{Side} frontal intracranial mass.",), avoid=("mass",)),
    _c("ms", "G35.A", F, ("relapsing-remitting multiple sclerosis",),
       ("Multiple periventricular and juxtacortical T2 lesions in this patient with relapsing-remitting multiple sclerosis.",),
       ("Findings of relapsing-remitting multiple sclerosis without enhancing lesions.",),
       unspec="G35.D", avoid=("white matter", "lesion")),
    _c("sinusitis", "J32.0", F, ("chronic maxillary sinusitis",),
       ("Mucosal thickening of the {side} maxillary sinus, chronic maxillary sinusitis.",),
       ("Chronic maxillary sinusitis.",), unspec="J32.9", avoid=("sinus",)),
    _c("thyroid_nodule", "E04.1", F, ("thyroid nodule",),
       ("A {small} mm solid nodule in the {side} thyroid lobe.",
        "Well-defined {small} mm nodule in the {side} thyroid lobe.",), ("{Side} thyroid nodule.",),
       avoid=("thyroid", "nodule")),
    _c("goiter", "E04.2", F, ("multinodular goiter",),
       ("The thyroid is enlarged with multiple bilateral nodules, multinodular goiter.",),
       ("Multinodular goiter.",), avoid=("thyroid", "nodule")),
    _c("graves", "E05.00", F, ("Graves disease",),
       ("Diffusely increased homogeneous uptake with 24-hour uptake of {pct}%, Graves disease.",),
       ("Graves disease.",), avoid=("uptake",)),
    _c("lymphadenopathy", "R59.0", F, ("cervical lymphadenopathy",),
       ("Enlarged {side} level II lymph node measuring {small} mm, lymphadenopathy.",),
       ("Localized {side} cervical lymphadenopathy.",), avoid=("lymph",)),
    _c("carotid_stenosis", _sided("I65.2{}", b="3"), F, ("carotid stenosis",),
       ("Peak systolic velocity in the {side} internal carotid artery corresponds to {stenosis} stenosis.",
        "Heterogeneous plaque at the {side} carotid bulb with elevated velocities, {stenosis} internal carotid artery stenosis.",),
       ("{stenosis} {side} internal carotid artery stenosis.",), avoid=("stenosis", "plaque", "carotid")),
    _c("carotid_stenosis_cta", _sided("I65.2{}", b="3"), F, ("carotid stenosis",),
       ("{stenosis} narrowing of the {side} proximal internal carotid artery by NASCET criteria, carotid stenosis.",),
       ("{stenosis} {side} internal carotid artery stenosis.",), avoid=("stenosis", "plaque")),
    # --- spine
    _c("disc_herniation", "M51.26", F, ("lumbar disc herniation",),
       ("Disc herniation at {llevel} contacting the traversing nerve root.",
        "Left paracentral disc herniation at {llevel} with mild canal narrowing.",), ("{llevel} disc herniation.",),
       avoid=("disc", "herniation", "canal")),
    _c("lumbar_spondylosis", "M47.816", F, ("lumbar spondylosis",),
       ("Multilevel lumbar spondylosis with facet arthropathy, worst at {llevel}.",
        "Lumbar spondylosis with disc space narrowing and endplate osteophytes at {llevel}.",), ("Lumbar spondylosis.",),
       avoid=("degenerative", "disc", "spondyl")),
    _c("lumbar_stenosis", "M48.061", F, ("lumbar spinal stenosis",),
       ("Moderate central canal stenosis at {llevel}.",), ("Lumbar spinal stenosis at {llevel}.",),
       unspec="M48.00", avoid=("stenosis", "canal")),
    _c("compression_fx", "M48.56XA", F, ("vertebral compression fracture",),
       ("Compression deformity of {vert} with {pct}% height loss, new compression fracture.",),
       ("Acute {vert} compression fracture.",), avoid=("fracture", "height", "alignment")),
    _c("cervical_spondylosis", "M47.812", F, ("cervical spondylosis",),
       ("Disc space narrowing and osteophytes at {clevel}, cervical spondylosis.",),
       ("Cervical spondylosis, worst at {clevel}.",), avoid=("degenerative", "disc", "spondyl")),
    _c("cervical_fx", "S12.500A", F, ("C6 vertebral fracture",),
       ("Nondisplaced fracture through the C6 vertebral body.",), ("Acute C6 fracture.",),
       avoid=("fracture",)),
    # --- extremities
    _c("knee_oa", {"R": "M17.11", "L": "M17.12", "B": "M17.0", "U": "M17.10"}, F, ("osteoarthritis of the knee",),
       ("Medial compartment joint space narrowing and osteophytes of the {side} knee, osteoarthritis.",
        "Tricompartmental osteophytes and joint space narrowing of the {side} knee, osteoarthritis.",),
       ("{Side} knee osteoarthritis.",), avoid=("joint space", "degenerative")),
    _c("medial_meniscus", _sided("S83.24{}A"), F, ("medial meniscus tear",),
       ("Tear of the posterior horn of the medial meniscus extending to the inferior articular surface.",
        "Oblique tear of the posterior horn of the medial meniscus.",),
       ("{Side} knee medial meniscus tear.",), avoid=("menisc",)),
    _c("lateral_meniscus", _sided("S83.28{}A"), F, ("lateral meniscus tear",),
       ("Radial tear of the body of the lateral meniscus.",), ("{Side} knee lateral meniscus tear.",),
       avoid=("menisc",)),
    _c("acl_tear", _sided("S83.51{}A"), F, ("ACL tear",),
       ("Complete tear of the anterior cruciate ligament with bone bruises.",), ("{Side} ACL tear.",),
       avoid=("cruciate", "ligament")),
    _c("baker_cyst", _sided("M71.2{}", u="0"), F, ("Baker cyst",),
       ("A {cm} cm Baker cyst in the {side} popliteal fossa.",), ("{Side} Baker cyst.",), avoid=("popliteal", "cyst")),
    _c("rotator_cuff", _sided("M75.12{}", u="0"), F, ("complete rotator cuff tear",),
       ("Full-thickness tear of the supraspinatus tendon with {small} mm retraction.",
        "Full-thickness supraspinatus tear with fluid in the subacromial bursa, complete rotator cuff tear.",),
       ("{Side} full-thickness rotator cuff tear.",), avoid=("rotator", "tendon")),
    _c("impingement", _sided("M75.4{}", u="0"), F, ("shoulder impingement",),
       ("Type II acromion with subacromial spurring, shoulder impingement.",), ("{Side} shoulder impingement.",),
       avoid=("acromi",)),
    _c("hip_oa", {"R": "M16.11", "L": "M16.12", "B": "M16.0", "U": "M16.10"}, F, ("osteoarthritis of the hip",),
       ("Superior joint space narrowing and osteophytes of the {side} hip, osteoarthritis.",
        "Osteophytes and subchondral sclerosis of the {side} hip, osteoarthritis.",),
       ("{Side} hip osteoarthritis.",), avoid=("joint space", "degenerative")),
    _c("hip_fx", _sided("S72.00{}A"), F, ("femoral neck fracture",),
       ("Displaced fracture of the {side} femoral neck.",
        "Subcapital {side} femoral neck fracture with varus angulation.",), ("Acute {side} femoral neck fracture.",),
       avoid=("fracture", "osseous")),
    _c("ankle_fx", _sided("S82.6{}XA", u="S82.63XA"), F, ("lateral malleolus fracture",),
       ("Displaced fracture of the {side} lateral malleolus.",
        "Oblique fracture through the {side} distal fibula at the lateral malleolus, mildly displaced.",), ("Acute {side} lateral malleolus fracture.",),
       avoid=("fracture", "osseous")),
    _c("metatarsal_fx", _sided("S92.35{}A", u="3"), F, ("fifth metatarsal fracture",),
       ("Displaced fracture of the {side} fifth metatarsal base.",), ("Acute {side} fifth metatarsal fracture.",),
       avoid=("fracture", "osseous")),
    _c("colles_fx", _sided("S52.53{}A"), F, ("Colles fracture",),
       ("Dorsally angulated fracture of the distal {side} radius, Colles fracture.",
        "Colles fracture: transverse fracture of the {side} distal radial metaphysis with dorsal angulation.",),
       ("{Side} Colles fracture.",), avoid=("fracture", "osseous")),
    _c("ganglion", _sided("M67.43{}"), F, ("ganglion cyst of the wrist",),
       ("A {small} mm ganglion cyst at the dorsal {side} wrist.",), ("{Side} wrist ganglion cyst.",),
       avoid=("cyst", "mass")),
    _c("boxer_fx", {"R": "S62.336A", "L": "S62.337A"}, F, ("fifth metacarpal neck fracture",),
       ("Angulated fracture of the {side} fifth metacarpal neck.",), ("Acute {side} fifth metacarpal neck fracture.",),
       avoid=("fracture", "osseous")),
    _c("radial_head_fx", _sided("S52.12{}A", u="3"), F, ("radial head fracture",),
       ("Displaced fracture of the {side} radial head with joint effusion.",), ("{Side} radial head fracture.",),
       avoid=("fracture", "osseous", "effusion")),
    _c("tibia_fx", _sided("S82.20{}A"), F, ("tibial shaft fracture",),
       ("Oblique fracture of the {side} tibial shaft.",), ("Acute {side} tibial shaft fracture.",),
       avoid=("fracture", "osseous")),
    _c("osteoporosis", "M81.0", F, ("osteoporosis",),
       ("Lumbar spine T-score of -{tscore}, in the osteoporosis range.",), ("Osteoporosis.",),
       avoid=("T-score", "normal range")),
    _c("osteopenia", "M85.80", F, ("osteopenia",),
       ("Femoral neck T-score of -1.{small}, osteopenia.",), ("Osteopenia.",), avoid=("T-score", "normal range")),
    _c("bone_mets", "C79.51", F, ("osseous metastases",),
       ("Multiple foci of increased uptake in the spine and ribs, osseous metastases.",),
       ("Osseous metastatic disease.",), avoid=("uptake", "metasta")),
    _c("lipoma", "D17.20", F, ("lipoma",),
       ("A {cm} cm fat-containing lesion, lipoma.",), ("Lipoma.",), avoid=("mass", "lesion")),
    # --- vascular
    _c("dvt_femoral", _sided("I82.41{}", b="3"), F, ("deep vein thrombosis of the femoral vein",),
       ("Noncompressible {side} femoral vein with occlusive echogenic thrombus, acute deep vein thrombosis.",
        "Acute deep vein thrombosis: the {side} femoral vein is distended with nonocclusive thrombus and does not compress.",),
       ("Acute {side} femoral vein deep vein thrombosis.",), avoid=("thromb", "compressib")),
    _c("dvt_popliteal", _sided("I82.43{}", b="3"), F, ("deep vein thrombosis of the popliteal vein",),
       ("Occlusive thrombus in the {side} popliteal vein, acute deep vein thrombosis.",
        "The {side} popliteal vein is noncompressible with absent flow, acute deep vein thrombosis.",),
       ("Acute {side} popliteal vein deep vein thrombosis.",), avoid=("thromb", "compressib")),
    _c("dvt_arm", _sided("I82.62{}", b="3"), F, ("upper extremity deep vein thrombosis",),
       ("Acute occlusive thrombus of the {side} brachial vein.",), ("Acute {side} upper extremity deep vein thrombosis.",),
       avoid=("thromb", "compressib")),
    _c("sup_phlebitis", _sided("I80.0{}", b="3", u="0"), F, ("superficial thrombophlebitis",),
       ("Thrombus in the {side} great saphenous vein, superficial thrombophlebitis. Deep veins are patent.",),
       ("{Side} superficial thrombophlebitis.",), avoid=("thromb",)),
    _c("varicose", _sided("I83.9{}", b="3", u="0"), F, ("varicose veins",),
       ("Dilated tortuous superficial veins of the {side} lower extremity, varicose veins.",),
       ("{Side} lower extremity varicose veins.",), avoid=("superficial",)),
    _c("venous_insuff", "I87.2", F, ("venous insufficiency",),
       ("Reflux greater than 500 ms in the great saphenous vein, venous insufficiency.",),
       ("Venous insufficiency.",), avoid=("reflux",)),
    _c("pad", _sided("I70.21{}", b="3", u="9"), F, ("peripheral arterial disease with claudication",),
       ("Monophasic waveforms below the {side} superficial femoral artery with a focal stenosis, atherosclerosis with intermittent claudication.",),
       ("{Side} lower extremity atherosclerosis with claudication.",), avoid=("triphasic", "stenosis", "waveform", "ankle-brachial", "plaque")),
    _c("renal_artery_stenosis", "I70.1", F, ("renal artery stenosis",),
       ("Elevated peak systolic velocity at the {side} renal artery origin, renal artery stenosis.",),
       ("{Side} renal artery stenosis.",), avoid=("stenosis", "velocit")),
    _c("access_stenosis", "T82.858A", F, ("dialysis access stenosis",),
       ("Focal narrowing at the venous anastomosis with velocity ratio above 3, access stenosis.",),
       ("Stenosis of the dialysis access at the venous anastomosis.",), avoid=("stenosis", "narrowing")),
    # --- breast
    _c("breast_calc", "R92.1", F, ("suspicious calcifications",),
       ("Grouped amorphous calcifications in the {side} breast upper outer quadrant.",
        "New fine pleomorphic calcifications in the {side} breast, 8 cm from the nipple.",),
       ("Suspicious {side} breast calcifications. BI-RADS 4.",), avoid=("calcification",)),
    _c("breast_incomplete", "R92.8", F, ("abnormal mammogram needing further evaluation",),
       ("Possible focal asymmetry in the {side} breast, further evaluation needed.",),
       ("Incomplete: {side} breast asymmetry, BI-RADS 0. Diagnostic views recommended.",),
       avoid=("asymmetr", "mass")),
    _c("dense_breasts", "R92.333", F, ("heterogeneously dense breasts",),
       ("The breasts are heterogeneously dense, which may obscure small masses.",),
       ("Heterogeneously dense breasts.",), unspec="R92.30", avoid=("density", "fatty", "dense")),
    _c("fibroadenoma", _sided("D24.{}"), F, ("fibroadenoma",),
       ("Oval circumscribed {small} mm mass in the {side} breast, consistent with fibroadenoma.",),
       ("{Side} breast fibroadenoma.",), avoid=("mass", "solid")),
    _c("breast_cyst", _sided("N60.0{}", b=None), F, ("simple breast cyst",),
       ("Circumscribed {small} mm simple cyst in the {side} breast.",), ("Simple {side} breast cyst. BI-RADS 2.",),
       avoid=("cyst",)),
    # --- heart, GI function
    _c("ischemia", "I25.10", F, ("coronary artery disease with inducible ischemia",),
       ("Reversible perfusion defect of the inferior wall, inducible ischemia from coronary artery disease.",),
       ("Inferior wall ischemia, coronary artery disease.",), avoid=("perfusion", "ischemia")),
    _c("gastroparesis", "K31.84", F, ("gastroparesis",),
       ("{pct}% gastric retention at 4 hours, gastroparesis.",), ("Delayed gastric emptying, gastroparesis.",),
       avoid=("gastric", "emptying")),
    _c("gerd", "K21.9", F, ("gastroesophageal reflux",),
       ("Spontaneous gastroesophageal reflux to the thoracic inlet.",), ("Gastroesophageal reflux.",),
       avoid=("reflux",)),
    _c("stricture", "K22.2", F, ("esophageal stricture",),
       ("Smooth narrowing of the distal esophagus to {small} mm, esophageal stricture.",),
       ("Distal esophageal stricture.",), avoid=("narrowing", "stricture")),
    _c("aspiration", "R13.12", F, ("oropharyngeal dysphagia with aspiration",),
       ("Silent aspiration with thin liquids; oropharyngeal dysphagia.",), ("Oropharyngeal dysphagia with aspiration.",),
       unspec="R13.10", avoid=("aspiration", "penetration")),
    _c("gastric_ulcer", "K25.9", F, ("gastric ulcer",),
       ("Persistent barium collection along the lesser curvature, gastric ulcer.",), ("Gastric ulcer.",),
       avoid=("ulcer", "mucosa")),
    _c("sepsis", "A41.9", F, ("sepsis",),
       ("Catheter placed for treatment of sepsis.",), ("Line placed for sepsis treatment.",), avoid=()),
    _c("iih", "G93.2", F, ("idiopathic intracranial hypertension",),
       ("Opening pressure {pressure} cm of water, elevated, consistent with idiopathic intracranial hypertension.",),
       ("Elevated opening pressure, idiopathic intracranial hypertension.",), avoid=("pressure",)),
    _c("nph", "G91.2", F, ("normal pressure hydrocephalus",),
       ("Lumbar puncture for suspected normal pressure hydrocephalus; {cc} mL CSF removed.",),
       ("Large volume tap for normal pressure hydrocephalus.",), avoid=("pressure",)),
)}

# ----------------------------------------------------------------------------- normal findings by region
NORMALS: dict[str, tuple[str, ...]] = {
    "chest": ("The lungs are clear.", "No focal consolidation.", "No pleural effusion or pneumothorax.",
              "The cardiomediastinal silhouette is within normal limits.", "No acute osseous abnormality.",
              "Heart size is normal.", "Pulmonary vasculature is normal."),
    "chest_ct": ("No pulmonary nodule or mass.", "No pleural effusion.", "No pneumothorax.",
                 "No mediastinal or hilar lymphadenopathy.", "Heart size is normal without pericardial effusion.",
                 "No acute osseous abnormality.", "Airways are patent.", "No pulmonary embolism.",
                 "No focal consolidation."),
    "abdomen": ("The liver is normal in size and attenuation.", "The gallbladder is unremarkable.",
                "The pancreas and spleen are unremarkable.", "No hydronephrosis or renal stone.",
                "The appendix is normal.", "No bowel obstruction or free air.", "No free fluid.",
                "No abdominal or pelvic lymphadenopathy.", "The bladder is unremarkable.",
                "The abdominal aorta is normal in caliber."),
    "abd_xr": ("Nonobstructive bowel gas pattern.", "No free air.", "Moderate stool burden.",
               "No abnormal calcifications.", "No acute osseous abnormality."),
    "ruq_us": ("The liver is normal in echotexture.", "The gallbladder is normal without gallstones or wall thickening.",
               "The common bile duct measures 4 mm.", "No pericholecystic fluid.", "Sonographic Murphy sign is negative.",
               "The pancreas is partially visualized and normal."),
    "renal_us": ("Both kidneys are normal in size and echogenicity.", "No hydronephrosis.",
                 "No renal stone or mass.", "The bladder is normal.", "No perinephric fluid."),
    "pelvis_f": ("The uterus is normal in size.", "The endometrium measures 6 mm.", "Both ovaries are normal.",
                 "No adnexal mass.", "No free fluid in the pelvis.", "Normal arterial and venous flow to both ovaries."),
    "scrotum": ("Both testes are normal in size and echotexture.", "Symmetric testicular blood flow.",
                "The epididymides are normal.", "No hydrocele.", "No varicocele."),
    "ob": ("Single live intrauterine pregnancy.", "Fetal heart rate {fhr} beats per minute.",
           "Biometry is concordant with dates.", "No subchorionic hemorrhage.", "The adnexa are unremarkable.",
           "Amniotic fluid volume is normal.", "Placenta is posterior without previa."),
    "head": ("No acute intracranial hemorrhage.", "No mass effect or midline shift.",
             "Gray-white matter differentiation is preserved.", "The ventricles are normal in size.",
             "No extra-axial fluid collection.", "The calvarium is intact.", "Visualized paranasal sinuses are clear."),
    "brain_mr": ("No restricted diffusion.", "No intracranial mass.", "No acute hemorrhage.",
                 "The ventricles and sulci are normal.", "Normal flow voids.", "No abnormal enhancement.",
                 "No white matter lesions."),
    "sinus": ("The paranasal sinuses are clear.", "The ostiomeatal complexes are patent.",
              "No acute facial fracture.", "The orbits are unremarkable."),
    "neck": ("The thyroid is normal in size.", "No cervical lymphadenopathy.", "The airway is patent.",
             "The salivary glands are unremarkable.", "No abscess or fluid collection.", "No neck mass."),
    "thyroid": ("The thyroid is normal in size and echotexture.", "No thyroid nodule.",
                "No cervical lymphadenopathy.", "Normal vascularity."),
    "lspine": ("Vertebral body heights are maintained.", "Normal alignment.", "Disc spaces are preserved.",
               "No central canal or foraminal stenosis.", "The conus is normal.", "No acute fracture."),
    "cspine": ("Vertebral body heights are maintained.", "Normal alignment of the cervical spine.",
               "No acute fracture.", "Prevertebral soft tissues are normal.", "Disc spaces are preserved.",
               "The cord is normal in signal."),
    "tspine": ("Vertebral body heights are maintained.", "Normal thoracic kyphosis.", "No acute fracture.",
               "Disc spaces are preserved."),
    "joint": ("No acute fracture or dislocation.", "Joint spaces are preserved.", "No joint effusion.",
              "Soft tissues are unremarkable.", "No degenerative change.", "Bone mineralization is normal."),
    "knee_mr": ("The menisci are intact.", "The cruciate and collateral ligaments are intact.",
                "No bone marrow edema.", "The extensor mechanism is intact.", "No joint effusion.",
                "Articular cartilage is preserved."),
    "shoulder_mr": ("The rotator cuff tendons are intact.", "The labrum is intact.", "No bone marrow edema.",
                    "The biceps tendon is normal in position.", "No joint effusion.", "The acromion is type I."),
    "soft_tissue": ("No discrete soft tissue mass.", "No fluid collection.", "Normal subcutaneous fat.",
                    "No abnormal vascularity."),
    "veins": ("The deep veins are fully compressible.", "Normal phasic flow and augmentation.",
              "No deep vein thrombosis.", "No superficial vein thrombus.", "Normal respiratory phasicity."),
    "arteries": ("Triphasic waveforms throughout.", "No hemodynamically significant stenosis.",
                 "Normal ankle-brachial indices.", "No plaque or occlusion."),
    "carotid": ("Minimal plaque without hemodynamically significant stenosis.", "Antegrade vertebral flow bilaterally.",
                "Normal internal carotid artery velocities.", "The common carotid arteries are patent."),
    "renal_duplex": ("Normal renal artery velocities.", "Renal resistive indices are normal.",
                     "The renal veins are patent.", "The abdominal aorta is normal in caliber."),
    "access": ("The fistula is patent with normal flow volume.", "No stenosis at the arterial or venous anastomosis.",
               "No perigraft fluid collection."),
    "breast": ("No suspicious mass, calcification or architectural distortion.", "The skin and nipples are normal.",
               "No axillary lymphadenopathy.", "Scattered fibroglandular densities.", "Stable postsurgical changes."),
    "breast_us": ("No sonographic correlate.", "No solid or cystic mass.", "Normal fibroglandular tissue.",
                  "No axillary lymphadenopathy."),
    "breast_mr": ("No suspicious enhancement.", "Minimal background parenchymal enhancement.",
                  "No axillary lymphadenopathy.", "No skin thickening."),
    "dexa": ("Lumbar spine T-score is within the normal range.", "Femoral neck T-score is within the normal range.",
             "No vertebral fracture on lateral assessment."),
    "bone_scan": ("Physiologic distribution of radiotracer.", "No focal abnormal uptake.",
                  "Degenerative uptake at the knees.", "Kidneys and bladder are visualized."),
    "mpi": ("Normal myocardial perfusion at stress and rest.", "Normal left ventricular ejection fraction of {ef}%.",
            "No wall motion abnormality.", "No transient ischemic dilation."),
    "hida": ("Prompt hepatic uptake.", "The gallbladder fills by 30 minutes.", "Normal gallbladder ejection fraction of {ef}%.",
             "Small bowel activity by 45 minutes."),
    "thyroid_nm": ("Homogeneous radiotracer uptake.", "24-hour uptake is within the normal range.",
                   "No hot or cold nodule."),
    "vq": ("Matched ventilation and perfusion.", "No segmental perfusion defect.", "Low probability for pulmonary embolism."),
    "pet": ("No hypermetabolic lymphadenopathy.", "No FDG-avid osseous lesion.", "Physiologic uptake in the brain and bowel.",
            "No hypermetabolic hepatic lesion."),
    "gastric": ("Normal gastric emptying at 4 hours.", "Retention within normal limits.", "No reflux."),
    "esophagus": ("Normal esophageal peristalsis.", "No stricture or mass.", "No reflux.", "No hiatal hernia.",
                  "Normal mucosal pattern."),
    "swallow": ("No laryngeal penetration or aspiration.", "Timely swallow initiation.", "No pharyngeal residue."),
    "hsg": ("Normal uterine cavity.", "Both fallopian tubes fill with free intraperitoneal spill.",
            "No filling defect."),
    "vcug": ("Normal bladder contour.", "No vesicoureteral reflux.", "Normal urethra during voiding.",
             "No post-void residual."),
    "procedure": ("No immediate complication.", "The patient tolerated the procedure well.",
                  "Estimated blood loss minimal.", "Sterile technique was used."),
}

# ----------------------------------------------------------------------------- exam types


@dataclass(frozen=True)
class ExamType:
    """One orderable exam: its CPT code(s), laterality rule and clinical vocabulary."""

    key: str
    modality: str
    names: tuple[str, ...]  # plain-language descriptions; {SIDE} becomes RIGHT/LEFT/BILATERAL
    cpt: tuple[str, ...]
    side: str  # none | lat (RT/LT) | lat50 (RT/LT or 50 for both sides)
    region: str  # key of NORMALS
    technique: tuple[str, ...]
    indications: tuple[str, ...]  # condition keys: symptoms or status
    findings: tuple[str, ...]  # condition keys stated when the study is positive
    incidentals: tuple[str, ...] = ()
    status: tuple[str, ...] = ()  # always coded first (screening, gestation)
    sex: str | None = None
    ages: tuple[int, int] = (18, 90)
    weight: float = 1.0
    p_normal: float = 0.3
    weeks: tuple[int, int] | None = None
    part: str | None = None  # body part for technique sentences; default: read from the first name
    distinct: str | None = None  # distinct-service modifier the exam's CPT pair needs (59)


def _e(key, modality, names, cpt, side, region, technique, indications, findings, **kw) -> ExamType:
    as_t = lambda v: (v,) if isinstance(v, str) else tuple(v)  # noqa: E731
    return ExamType(key, modality, as_t(names), as_t(cpt), side, region, as_t(technique), as_t(indications),
                    as_t(findings), **{k: as_t(v) if k in ("incidentals", "status") else v for k, v in kw.items()})


_CT_WO = "Axial CT images of the {part} were obtained without intravenous contrast. Multiplanar reformats were reviewed."
_CT_W = "Axial CT images of the {part} were obtained after {ml} mL of intravenous contrast. Multiplanar reformats were reviewed."
_MR_WO = "Multiplanar multisequence MR images of the {part} were obtained without contrast."
_MR_WWO = "Multiplanar MR images of the {part} were obtained before and after {gad} mL of gadolinium contrast."
_US = "Grayscale and color Doppler sonographic images of the {part} were obtained."
_DUP = "Duplex ultrasound with grayscale, color and spectral Doppler of the {part}."
_FL_TIME = "Fluoroscopy time {fluoro} minutes."
_NM = "After intravenous administration of {mci} mCi of {tracer}, images were obtained."
_IR = "Informed consent was obtained. Time-out was performed. {guidance} guidance was used for {procedure}."

_CHEST_SX = ("cough", "sob", "chest_pain", "fever", "hemoptysis")
_CHEST_FX = ("pneumonia", "lobar_pneumonia", "effusion", "pneumothorax", "atelectasis", "pulm_edema", "cardiomegaly",
             "rib_fx")
_ABD_SX = ("abd_pain", "rlq_pain", "llq_pain", "ruq_pain", "epigastric_pain", "nausea_vomiting", "hematuria")
_ABD_FX = ("appendicitis", "diverticulitis", "kidney_stone", "ureter_stone", "hydronephrosis", "pancreatitis", "sbo",
           "colitis", "acute_chole", "ascites", "aaa", "inguinal_hernia")
_ABD_INC = ("fatty_liver", "renal_cyst", "diverticulosis", "gallstones", "umbilical_hernia", "hiatal_hernia",
            "liver_hemangioma", "splenomegaly")
_HEAD_SX = ("headache", "dizziness", "syncope", "ams", "head_injury")

EXAMS: tuple[ExamType, ...] = (
    # --- radiographs
    _e("xr_chest_1v", "radiograph", ("XR CHEST 1 VIEW", "XR CHEST PORTABLE AP"), "71045", "none", "chest",
       "A single portable AP view of the chest was obtained.", _CHEST_SX, _CHEST_FX, weight=3.0),
    _e("xr_chest_2v", "radiograph", ("XR CHEST 2 VIEWS", "XR CHEST PA AND LATERAL"), "71046", "none", "chest",
       "PA and lateral views of the chest were obtained.", _CHEST_SX, _CHEST_FX + ("nodule", "lung_mass"),
       incidentals=("hiatal_hernia",), weight=3.5),
    _e("xr_abdomen", "radiograph", ("XR ABDOMEN 1 VIEW", "XR KUB"), "74018", "none", "abd_xr",
       "A single supine view of the abdomen was obtained.", ("abd_pain", "nausea_vomiting", "hematuria"),
       ("kidney_stone", "sbo")),
    _e("xr_lspine", "radiograph", ("XR LUMBAR SPINE 2-3 VIEWS", "XR L-SPINE"), "72100", "none", "lspine",
       "AP and lateral views of the lumbar spine were obtained.", ("low_back_pain", "sciatica"),
       ("lumbar_spondylosis", "compression_fx"), weight=1.5),
    _e("xr_cspine", "radiograph", ("XR CERVICAL SPINE 2-3 VIEWS", "XR C-SPINE"), "72040", "none", "cspine",
       "AP, lateral and odontoid views of the cervical spine were obtained.", ("neck_pain", "cerv_radic"),
       ("cervical_spondylosis",)),
    _e("xr_knee", "radiograph", ("XR KNEE 3 VIEWS {SIDE}", "XR {SIDE} KNEE 3 VIEWS"), "73562", "lat50", "joint",
       "Three views of the {part} were obtained.", ("knee_pain",), ("knee_oa", "tibia_fx"),
       weight=2.5),
    _e("xr_shoulder", "radiograph", ("XR SHOULDER 2+ VIEWS {SIDE}", "XR {SIDE} SHOULDER"), "73030", "lat50", "joint",
       "Internal rotation, external rotation and axillary views of the {part} were obtained.",
       ("shoulder_pain",), ("impingement",), weight=1.5),
    _e("xr_hip", "radiograph", ("XR HIP 2-3 VIEWS {SIDE}", "XR {SIDE} HIP WITH PELVIS"), "73502", "lat", "joint",
       "AP pelvis and frog-leg lateral views of the {part} were obtained.", ("hip_pain",), ("hip_oa", "hip_fx"),
       weight=1.5),
    _e("xr_ankle", "radiograph", ("XR ANKLE 3+ VIEWS {SIDE}", "XR {SIDE} ANKLE"), "73610", "lat", "joint",
       "AP, mortise and lateral views of the {part} were obtained.", ("ankle_pain",), ("ankle_fx",), weight=1.5),
    _e("xr_foot", "radiograph", ("XR FOOT 3+ VIEWS {SIDE}", "XR {SIDE} FOOT"), "73630", "lat50", "joint",
       "AP, oblique and lateral views of the {part} were obtained.", ("foot_pain",), ("metatarsal_fx",)),
    _e("xr_wrist", "radiograph", ("XR WRIST 3+ VIEWS {SIDE}", "XR {SIDE} WRIST"), "73110", "lat", "joint",
       "PA, oblique and lateral views of the {part} were obtained.", ("wrist_pain",), ("colles_fx",)),
    _e("xr_hand", "radiograph", ("XR HAND 3+ VIEWS {SIDE}", "XR {SIDE} HAND"), "73130", "lat", "joint",
       "PA, oblique and lateral views of the {part} were obtained.", ("hand_pain",), ("boxer_fx",)),
    _e("xr_elbow", "radiograph", ("XR ELBOW 3+ VIEWS {SIDE}", "XR {SIDE} ELBOW"), "73080", "lat", "joint",
       "AP, oblique and lateral views of the {part} were obtained.", ("elbow_pain",), ("radial_head_fx",)),
    # --- CT
    _e("ct_head_wo", "ct", ("CT HEAD WO CONTRAST", "CT BRAIN WITHOUT CONTRAST"), "70450", "none", "head",
       _CT_WO, _HEAD_SX + ("tia",), ("stroke", "ich", "sdh"), incidentals=("small_vessel",), weight=3.0),
    _e("ct_head_cspine", "ct", ("CT HEAD AND CERVICAL SPINE WO CONTRAST", "CT HEAD/C-SPINE TRAUMA WO"),
       ("70450", "72125"), "none", "head", _CT_WO, ("head_injury", "neck_pain"), ("sdh", "cervical_fx"),
       incidentals=("cervical_spondylosis", "small_vessel")),
    _e("ct_sinus", "ct", ("CT MAXILLOFACIAL WO CONTRAST", "CT SINUSES WITHOUT CONTRAST"), "70486", "none", "sinus",
       _CT_WO, ("headache",), ("sinusitis",), p_normal=0.4, weight=0.7),
    _e("ct_neck_w", "ct", ("CT SOFT TISSUE NECK W CONTRAST",), "70491", "none", "neck", _CT_W,
       ("neck_mass",), ("lymphadenopathy", "thyroid_nodule"), weight=0.7),
    _e("cta_head_neck", "ct", ("CTA HEAD AND NECK", "CT ANGIOGRAM HEAD AND NECK"), ("70496", "70498"), "none",
       "head", "CT angiography of the head and neck after {ml} mL of intravenous contrast with 3D reconstructions.",
       ("tia", "dizziness"), ("carotid_stenosis_cta", "stroke"), weight=0.8),
    _e("ct_chest_wo", "ct", ("CT CHEST WO CONTRAST",), "71250", "none", "chest_ct", _CT_WO,
       ("cough", "sob", "hemoptysis"), ("nodule", "lung_mass", "emphysema", "pneumonia", "effusion"),
       incidentals=("coronary_calc", "hiatal_hernia"), weight=1.5),
    _e("ct_chest_w", "ct", ("CT CHEST W CONTRAST",), "71260", "none", "chest_ct", _CT_W,
       ("cough", "weight_loss", "hemoptysis"), ("lung_mass", "effusion", "pneumonia", "nodule"),
       incidentals=("coronary_calc", "emphysema")),
    _e("cta_chest_pe", "ct", ("CTA CHEST PE PROTOCOL", "CT ANGIOGRAM CHEST FOR PE"), "71275", "none", "chest_ct",
       "CT angiography of the chest in the pulmonary arterial phase after {ml} mL of intravenous contrast.",
       ("chest_pain", "sob"), ("pe",), incidentals=("atelectasis", "nodule", "emphysema"), weight=1.5),
    _e("ct_lung_screen", "ct", ("CT LOW DOSE LUNG CANCER SCREENING", "LDCT LUNG SCREENING"), "71271", "none",
       "chest_ct", "Low-dose axial CT images of the chest were obtained without contrast.",
       ("former_smoker", "current_smoker"), ("nodule", "emphysema"), incidentals=("coronary_calc",),
       status=("screen_lung",), ages=(50, 80), p_normal=0.5),
    _e("ct_ap_wo", "ct", ("CT ABDOMEN PELVIS WO CONTRAST", "CT A/P WITHOUT CONTRAST", "CT STONE PROTOCOL"),
       "74176", "none", "abdomen", _CT_WO, ("hematuria", "llq_pain", "rlq_pain", "abd_pain"),
       ("kidney_stone", "ureter_stone", "hydronephrosis", "appendicitis", "diverticulitis"),
       incidentals=_ABD_INC, weight=2.0),
    _e("ct_ap_w", "ct", ("CT ABDOMEN PELVIS W CONTRAST", "CT A/P WITH IV CONTRAST"), "74177", "none", "abdomen",
       _CT_W, _ABD_SX, _ABD_FX, incidentals=_ABD_INC, weight=3.5),
    _e("ct_ap_wwo", "ct", ("CT UROGRAM", "CT ABDOMEN PELVIS WO AND W CONTRAST"), "74178", "none", "abdomen",
       "CT of the abdomen and pelvis before and after {ml} mL of intravenous contrast with delayed excretory images.",
       ("gross_hematuria", "hematuria"), ("kidney_stone", "renal_cyst", "hydronephrosis"),
       incidentals=("fatty_liver", "diverticulosis", "bph")),
    _e("ct_cap_w", "ct", ("CT CHEST ABDOMEN PELVIS W CONTRAST", "CT C/A/P WITH CONTRAST"), ("71260", "74177"),
       "none", "abdomen", _CT_W, ("weight_loss", "abd_pain", "lung_ca_hx"),
       ("lung_mass", "ascites", "liver_hemangioma", "effusion"), incidentals=_ABD_INC, weight=1.2),
    _e("ct_lspine_wo", "ct", ("CT LUMBAR SPINE WO CONTRAST",), "72131", "none", "lspine", _CT_WO,
       ("low_back_pain",), ("compression_fx", "lumbar_spondylosis", "lumbar_stenosis"), weight=0.7),
    # --- MRI
    _e("mr_brain_wo", "mri", ("MRI BRAIN WO CONTRAST",), "70551", "none", "brain_mr", _MR_WO,
       ("headache", "dizziness", "tia"), ("stroke", "small_vessel"), weight=1.2),
    _e("mr_brain_wwo", "mri", ("MRI BRAIN WO AND W CONTRAST", "MRI BRAIN WITH AND WITHOUT CONTRAST"), "70553", "none",
       "brain_mr", _MR_WWO, ("headache", "dizziness"), ("brain_lesion", "ms"), incidentals=("sinusitis",)),
    _e("mr_cspine_wo", "mri", ("MRI CERVICAL SPINE WO CONTRAST",), "72141", "none", "cspine", _MR_WO,
       ("neck_pain", "cerv_radic"), ("cervical_spondylosis",)),
    _e("mr_lspine_wo", "mri", ("MRI LUMBAR SPINE WO CONTRAST", "MRI L-SPINE WITHOUT CONTRAST"), "72148", "none",
       "lspine", _MR_WO, ("low_back_pain", "sciatica"), ("disc_herniation", "lumbar_stenosis", "lumbar_spondylosis"),
       weight=2.0),
    _e("mr_knee_wo", "mri", ("MRI KNEE WO CONTRAST {SIDE}", "MRI {SIDE} KNEE WITHOUT CONTRAST"), "73721", "lat",
       "knee_mr", _MR_WO, ("knee_pain",), ("medial_meniscus", "lateral_meniscus", "acl_tear", "baker_cyst"),
       incidentals=("knee_oa",), weight=1.8, p_normal=0.2),
    _e("mr_shoulder_wo", "mri", ("MRI SHOULDER WO CONTRAST {SIDE}", "MRI {SIDE} SHOULDER"), "73221", "lat",
       "shoulder_mr", _MR_WO, ("shoulder_pain",), ("rotator_cuff", "impingement"), weight=1.2, p_normal=0.2),
    _e("mr_breast", "mri", ("MRI BREAST BILATERAL WO AND W CONTRAST",), "77049", "none", "breast_mr", _MR_WWO,
       ("hx_breast_ca", "fam_hx_breast"), ("fibroadenoma", "breast_cyst"), sex="F", ages=(30, 75), weight=0.6,
       p_normal=0.5),
    # --- ultrasound
    _e("us_abd_complete", "ultrasound", ("US ABDOMEN COMPLETE",), "76700", "none", "ruq_us", _US,
       ("abd_pain", "epigastric_pain", "nausea_vomiting"), ("gallstones", "fatty_liver", "splenomegaly", "ascites"),
       incidentals=("renal_cyst",), part="complete abdomen (liver, gallbladder, pancreas, spleen, kidneys and aorta)"),
    _e("us_ruq", "ultrasound", ("US ABDOMEN LIMITED RUQ", "US RIGHT UPPER QUADRANT"), "76705", "none", "ruq_us", _US,
       ("ruq_pain", "epigastric_pain"), ("gallstones", "acute_chole", "fatty_liver"), weight=1.8, part="right upper quadrant (liver, gallbladder and bile ducts)"),
    _e("us_renal", "ultrasound", ("US RETROPERITONEAL COMPLETE", "US KIDNEYS AND BLADDER"), "76770", "none",
       "renal_us", _US, ("hematuria", "uti"), ("hydronephrosis", "kidney_stone", "renal_cyst"), weight=1.2,
       part="kidneys and bladder"),
    _e("us_pelvis", "ultrasound", ("US PELVIS TRANSABDOMINAL AND TRANSVAGINAL", "US PELVIS COMPLETE"),
       ("76856", "76830"), "none", "pelvis_f", _US, ("pelvic_pain", "pmb"),
       ("ovarian_cyst", "fibroid", "endometrial_thick"), sex="F", weight=1.5, part="pelvis",
       distinct="59"),  # the transabdominal/transvaginal pair is an NCCI edit billed with 59
    _e("us_thyroid", "ultrasound", ("US THYROID", "US SOFT TISSUE NECK THYROID"), "76536", "none", "thyroid", _US,
       ("neck_mass",), ("thyroid_nodule", "goiter", "lymphadenopathy")),
    _e("us_scrotum", "ultrasound", ("US SCROTUM AND TESTES", "US SCROTUM WITH DOPPLER"), "76870", "none", "scrotum",
       _US, ("scrotal_pain",), ("hydrocele", "varicocele", "epididymitis"), sex="M", weight=0.7),
    _e("us_ob_first", "ultrasound", ("US OB LESS THAN 14 WEEKS", "US OB FIRST TRIMESTER"), "76801", "none", "ob",
       "Transabdominal and transvaginal obstetric sonography.", ("preg_first",), ("threatened_ab",),
       status=("weeks",), sex="F", ages=(18, 44), weeks=(8, 13), p_normal=0.7, weight=0.8),
    _e("us_ob_anatomy", "ultrasound", ("US OB DETAILED ANATOMY 14+ WEEKS", "US OB ANATOMY SURVEY"), "76805", "none",
       "ob", "Transabdominal obstetric sonography with fetal anatomic survey.", ("preg_second",), (),
       status=("anatomy_screen", "weeks"), sex="F", ages=(18, 44), weeks=(18, 22), p_normal=1.0, weight=0.7),
    _e("us_breast", "ultrasound", ("US BREAST {SIDE} COMPLETE", "US {SIDE} BREAST"), "76641", "lat50", "breast_us",
       "Targeted grayscale and color Doppler sonography of the {side} breast.", ("breast_lump", "breast_pain"),
       ("fibroadenoma", "breast_cyst"), sex="F", weight=1.0),
    _e("us_extremity_soft", "ultrasound", ("US EXTREMITY NONVASCULAR LIMITED {SIDE}", "US {SIDE} LOWER EXTREMITY SOFT TISSUE"),
       "76882", "lat", "soft_tissue", "Targeted sonography of the {side} lower extremity soft tissues.",
       ("soft_tissue_mass",), ("lipoma", "baker_cyst"), weight=0.6),
    # --- vascular duplex
    _e("dup_le_venous_bi", "ultrasound", ("US VENOUS DUPLEX LOWER EXTREMITIES BILATERAL", "US BILATERAL LE VENOUS DOPPLER"),
       "93970", "none", "veins", _DUP, ("leg_swelling", "leg_pain"),
       ("dvt_femoral", "dvt_popliteal", "sup_phlebitis", "varicose", "venous_insuff"), weight=2.0, p_normal=0.45, part="veins of both lower extremities"),
    _e("dup_le_venous_uni", "ultrasound", ("US VENOUS DUPLEX LOWER EXTREMITY {SIDE}", "US {SIDE} LE VENOUS DOPPLER"),
       "93971", "lat", "veins", _DUP, ("leg_pain", "leg_swelling"),
       ("dvt_femoral", "dvt_popliteal", "sup_phlebitis", "baker_cyst"), weight=2.0, p_normal=0.45, part="lower extremity veins"),
    _e("dup_ue_venous_uni", "ultrasound", ("US VENOUS DUPLEX UPPER EXTREMITY {SIDE}", "US {SIDE} ARM VENOUS DOPPLER"),
       "93971", "lat", "veins", _DUP, ("arm_pain",), ("dvt_arm",), weight=0.8, p_normal=0.45, part="upper extremity veins"),
    _e("dup_le_arterial_bi", "ultrasound", ("US ARTERIAL DUPLEX LOWER EXTREMITIES BILATERAL",), "93925", "none",
       "arteries", _DUP, ("claudication",), ("pad",), ages=(45, 90), weight=0.8, part="arteries of both lower extremities"),
    _e("dup_le_arterial_uni", "ultrasound", ("US ARTERIAL DUPLEX LOWER EXTREMITY {SIDE}",), "93926", "lat",
       "arteries", _DUP, ("claudication", "leg_pain"), ("pad",), ages=(45, 90), weight=0.6, part="lower extremity arteries"),
    _e("dup_carotid", "ultrasound", ("US CAROTID DUPLEX BILATERAL", "US CAROTID DOPPLER"), "93880", "none", "carotid",
       _DUP, ("carotid_bruit", "tia", "dizziness", "syncope"), ("carotid_stenosis",), ages=(40, 90), weight=1.5,
       p_normal=0.45, part="carotid arteries"),
    _e("dup_renal", "ultrasound", ("US DUPLEX RENAL ARTERIES COMPLETE",), "93975", "none", "renal_duplex", _DUP,
       ("hematuria",), ("renal_artery_stenosis",), weight=0.4),
    _e("dup_dialysis", "ultrasound", ("US DUPLEX HEMODIALYSIS ACCESS",), "93990", "none", "access", _DUP,
       ("esrd_dialysis",), ("access_stenosis",), weight=0.4),
    # --- mammography
    _e("mg_screen_tomo", "mammography", ("MG SCREENING BILATERAL WITH TOMOSYNTHESIS", "SCREENING MAMMOGRAM 3D"),
       ("77067", "77063"), "none", "breast",
       "Bilateral digital screening mammography with tomosynthesis. Computer-aided detection was used.",
       ("fam_hx_breast", "hx_breast_ca", "menopause"), ("breast_incomplete", "dense_breasts", "breast_calc"),
       status=("screen_breast",), sex="F", ages=(40, 80), weight=2.5, p_normal=0.55),
    _e("mg_screen", "mammography", ("MG SCREENING BILATERAL", "SCREENING MAMMOGRAM 2D"), "77067", "none", "breast",
       "Bilateral digital screening mammography. Computer-aided detection was used.",
       ("fam_hx_breast", "menopause"), ("breast_incomplete", "dense_breasts"), status=("screen_breast",), sex="F",
       ages=(40, 80), weight=1.5, p_normal=0.55),
    _e("mg_diag_uni", "mammography", ("MG DIAGNOSTIC {SIDE}", "DIAGNOSTIC MAMMOGRAM {SIDE} BREAST"), "77065", "lat",
       "breast", "Diagnostic digital mammography of the {side} breast with spot compression views.",
       ("breast_lump", "breast_pain"), ("breast_calc", "breast_cyst", "fibroadenoma"), sex="F", ages=(30, 85)),
    _e("mg_diag_bi", "mammography", ("MG DIAGNOSTIC BILATERAL", "DIAGNOSTIC MAMMOGRAM BILATERAL"), "77066", "none",
       "breast", "Bilateral diagnostic digital mammography.", ("hx_breast_ca", "breast_pain"),
       ("breast_calc", "dense_breasts"), sex="F", ages=(30, 85), weight=0.8),
    # --- densitometry
    _e("dxa", "densitometry", ("DXA BONE DENSITY AXIAL SKELETON", "DEXA SCAN HIPS AND SPINE"), "77080", "none",
       "dexa", "Dual-energy x-ray absorptiometry of the lumbar spine and hips.", ("menopause",),
       ("osteoporosis", "osteopenia"), status=("screen_osteo",), sex="F", ages=(50, 85), p_normal=0.35),
    # --- nuclear medicine
    _e("nm_bone", "nuclear_medicine", ("NM BONE SCAN WHOLE BODY",), "78306", "none", "bone_scan", _NM,
       ("prostate_ca", "breast_ca"), ("bone_mets",), weight=0.7, p_normal=0.5),
    _e("nm_mpi", "nuclear_medicine", ("NM MYOCARDIAL PERFUSION SPECT STRESS AND REST", "NUCLEAR STRESS TEST"),
       "78452", "none", "mpi", _NM, ("chest_pain", "sob"), ("ischemia",), weight=1.0),
    _e("nm_hida", "nuclear_medicine", ("NM HEPATOBILIARY SCAN WITH CCK", "HIDA SCAN WITH EJECTION FRACTION"), "78227",
       "none", "hida", _NM, ("ruq_pain",), ("chronic_chole",), weight=0.6),
    _e("nm_thyroid", "nuclear_medicine", ("NM THYROID UPTAKE AND IMAGING",), "78014", "none", "thyroid_nm", _NM,
       ("neck_mass",), ("graves", "goiter"), weight=0.4),
    _e("nm_vq", "nuclear_medicine", ("NM LUNG VENTILATION PERFUSION", "V/Q SCAN"), "78582", "none", "vq", _NM,
       ("sob", "chest_pain"), ("pe_vq",), weight=0.5, p_normal=0.5),
    _e("pet_ct", "nuclear_medicine", ("PET/CT SKULL BASE TO MID THIGH", "FDG PET CT INITIAL STAGING"), "78815",
       "none", "pet", _NM, ("lung_ca_hx",), ("bone_mets", "lymphadenopathy"), weight=0.6, p_normal=0.4),
    _e("nm_gastric", "nuclear_medicine", ("NM GASTRIC EMPTYING STUDY",), "78264", "none", "gastric", _NM,
       ("nausea", "nausea_vomiting"), ("gastroparesis",), weight=0.4),
    # --- fluoroscopy
    _e("fl_esophagram", "fluoroscopy", ("FL ESOPHAGRAM", "FL BARIUM SWALLOW"), "74220", "none", "esophagus",
       "Single and double contrast esophagram with {contrast_agent}. " + _FL_TIME,
       ("dysphagia",), ("stricture", "hiatal_hernia", "gerd"), weight=0.6),
    _e("fl_mbs", "fluoroscopy", ("FL MODIFIED BARIUM SWALLOW", "FL VIDEO SWALLOW STUDY"), "74230", "none", "swallow",
       "Modified barium swallow with speech pathology, barium of varied consistencies. " + _FL_TIME,
       ("dysphagia", "oropharyngeal_dysphagia"), ("aspiration",), weight=0.5, p_normal=0.4),
    _e("fl_ugi", "fluoroscopy", ("FL UPPER GI SERIES",), "74240", "none", "esophagus",
       "Upper GI series of the esophagus, stomach and duodenum with {contrast_agent}. " + _FL_TIME,
       ("epigastric_pain", "nausea"), ("gastric_ulcer", "gerd", "hiatal_hernia"), weight=0.4),
    _e("fl_hsg", "fluoroscopy", ("FL HYSTEROSALPINGOGRAM",), "74740", "none", "hsg",
       "The cervix was cannulated and water-soluble contrast was instilled into the uterine cavity. " + _FL_TIME,
       ("infertility",), ("tubal_infert",), sex="F", ages=(22, 42), weight=0.3),
    _e("fl_vcug", "fluoroscopy", ("FL VOIDING CYSTOURETHROGRAM",), "74455", "none", "vcug",
       "The bladder was catheterized and filled with contrast; filling and voiding images were obtained. " + _FL_TIME,
       ("uti",), ("vur",), ages=(1, 12), weight=0.3),
    # --- interventional guidance
    _e("ir_ct_biopsy", "interventional", ("CT GUIDED LUNG BIOPSY",), "77012", "none", "procedure",
       _IR.replace("{guidance}", "CT").replace("{procedure}", "coaxial needle biopsy of the lesion"), ("cough",),
       ("lung_mass", "nodule"), p_normal=0.0, weight=0.5),
    _e("ir_us_thyroid_fna", "interventional", ("US GUIDED THYROID FNA", "US GUIDED FINE NEEDLE ASPIRATION THYROID"),
       "76942", "none", "procedure",
       _IR.replace("{guidance}", "Ultrasound").replace("{procedure}", "fine needle aspiration"), ("neck_mass",),
       ("thyroid_nodule",), p_normal=0.0, weight=0.5),
    _e("ir_drain", "interventional", ("IR PERCUTANEOUS ABSCESS DRAINAGE GUIDANCE", "CT GUIDED DRAIN PLACEMENT"),
       "75989", "none", "procedure",
       _IR.replace("{guidance}", "CT").replace("{procedure}", "placement of a 10 French drainage catheter"),
       ("fever", "abd_pain"), ("abscess", "liver_abscess"), p_normal=0.0, weight=0.4),
    _e("ir_picc", "interventional", ("IR PICC PLACEMENT WITH US AND FLUORO GUIDANCE", "PICC LINE PLACEMENT"),
       ("76937", "77001"), "none", "procedure",
       "Ultrasound guidance was used to access the patent basilic vein; fluoroscopy confirmed the catheter tip at the cavoatrial junction.",
       ("picc_abx",), ("sepsis",), p_normal=0.5, weight=0.5),
    _e("ir_fluoro_lp", "interventional", ("FLUORO GUIDED LUMBAR PUNCTURE",), "77003", "none", "procedure",
       _IR.replace("{guidance}", "Fluoroscopic").replace("{procedure}", "lumbar puncture at L3-L4"),
       ("headache",), ("iih", "nph"), p_normal=0.3, weight=0.4),
)
EXAM_TYPES: dict[str, ExamType] = {e.key: e for e in EXAMS}

# ----------------------------------------------------------------------------- sites and setting
# Hospital sites bill the radiologist's read (26); the imaging centre bills globally (no component
# modifier); the orthopedic clinic owns the equipment and an outside group reads (TC).
SITES: tuple[tuple[str, str, float], ...] = (
    ("Lakeview General Hospital", "hospital", 0.28),
    ("St. Brigid Medical Center", "hospital", 0.22),
    ("Harbor Imaging Center", "office", 0.22),
    ("Cedar Ridge Outpatient Imaging", "office", 0.18),
    ("Valley Multispecialty Clinic", "office_tc", 0.06),
)
PLACES = {
    "hospital": ("Emergency department", "Inpatient", "Hospital outpatient department"),
    "office": ("Outpatient imaging center",),
    "office_tc": ("Clinic, technical component only; outside group interprets",),
}
COMPONENT_MODIFIER = {"hospital": "26", "office": None, "office_tc": "TC"}

_LOBES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe")
_RIBS = ("fifth", "sixth", "seventh", "eighth", "ninth")
_REASON_FORMS = ("{Name}.", "{Name}, evaluate.", "{age} y/o {sexw} with {name}.", "{Name}; rule out {ruleout}.",
                 "Hx: {name}.", "{Name} x {days} days.")
_NORMAL_IMPRESSIONS = ("No acute abnormality.", "Negative examination.", "No acute findings to explain the {name}.",
                       "Normal study.", "No significant abnormality identified.")
_REGION_NORMAL_IMPRESSIONS = {
    "chest": ("No acute cardiopulmonary process.",), "chest_ct": ("No acute intrathoracic abnormality.",),
    "head": ("No acute intracranial abnormality.",), "brain_mr": ("Normal MRI of the brain.",),
    "abdomen": ("No acute abdominal or pelvic abnormality.",), "joint": ("No acute fracture or dislocation.",),
    "veins": ("No deep vein thrombosis.",), "arteries": ("No hemodynamically significant arterial disease.",),
    "breast": ("No mammographic evidence of malignancy. BI-RADS 1: negative.", "Benign findings. BI-RADS 2."),
    "lspine": ("No acute abnormality of the lumbar spine.",), "cspine": ("No acute cervical spine abnormality.",),
    "ob": ("Single live intrauterine pregnancy, size equals dates.",),
}
_IMPRESSION_TAILS = ("", "", "", "", " Clinical correlation recommended.", " Follow-up as clinically indicated.",
                     " Results communicated to the ordering provider.")
EXAM_LABELS = ("EXAM", "PROCEDURE", "STUDY")
_HISTORY_LABELS = ("CLINICAL HISTORY", "INDICATION", "HISTORY", "REASON FOR STUDY")
_COMPARISONS = ("None.", "None available.", "Prior study from {prior}.", "Outside images from {prior}.")


_PART_STOP = {"WO", "W", "WITH", "COMPLETE", "LIMITED", "PE", "2+", "3+", "2-3", "1", "3", "{SIDE}", "SPECT", "SCAN",
              "LESS", "DETAILED", "FIRST", "GUIDED", "STUDY", "SERIES", "UPTAKE", "BILATERAL"}
_PART_DROP = {"VENOUS", "ARTERIAL", "DUPLEX", "NONVASCULAR", "SCREENING", "DIAGNOSTIC", "LOW", "DOSE",
              "RETROPERITONEAL", "TRANSABDOMINAL", "MYOCARDIAL", "PERFUSION", "HEPATOBILIARY"}


def _part(name: str) -> str:
    """The body part of a description, for technique sentences ("CT ABDOMEN PELVIS W.." -> "abdomen pelvis")."""
    words = []
    for w in name.split()[1:]:
        if w in _PART_STOP:
            break
        if w not in _PART_DROP:
            words.append(w)
    return " ".join(words).lower().replace("/", " and ") or name.lower()


_PARTS = {e.key: e.part or _part(e.names[0]) for e in EXAMS}


def _cum(weights) -> list[float]:
    return list(itertools.accumulate(weights))


_EXAM_CUM = _cum(e.weight for e in EXAMS)
_SITE_CUM = _cum(s[2] for s in SITES)


class _Draw:
    """Fast seeded draws (``random.Random.random`` only), so 100K cases take seconds, not minutes."""

    def __init__(self, seed: int):
        self.random = random.Random(seed).random

    def pick(self, seq):
        return seq[int(self.random() * len(seq))]

    def int(self, lo: int, hi: int) -> int:
        return lo + int(self.random() * (hi - lo + 1))

    def real(self, lo: float, hi: float) -> float:
        return round(lo + self.random() * (hi - lo), 1)

    def chance(self, p: float) -> bool:
        return self.random() < p

    def weighted(self, items, cum: list[float]):
        return items[bisect.bisect_left(cum, self.random() * cum[-1])]


_TRACERS = {"nm_bone": "Tc-99m MDP", "nm_mpi": "Tc-99m sestamibi", "nm_hida": "Tc-99m mebrofenin",
            "nm_thyroid": "I-123", "nm_vq": "Tc-99m MAA", "pet_ct": "F-18 FDG",
            "nm_gastric": "Tc-99m sulfur colloid in egg meal"}
# Every value a template may name, drawn on first use so findings and impression of a case agree.
_FILL_RULES = {
    "small": lambda d, e: d.int(3, 9), "mm": lambda d, e: d.int(5, 28), "cm": lambda d, e: d.real(1.1, 9.8),
    "lobe": lambda d, e: d.pick(_LOBES), "rib": lambda d, e: d.pick(_RIBS),
    "llevel": lambda d, e: d.pick(("L3-L4", "L4-L5", "L5-S1")), "clevel": lambda d, e: d.pick(("C4-C5", "C5-C6", "C6-C7")),
    "vert": lambda d, e: d.pick(("L1", "L2", "L3", "L4")), "pct": lambda d, e: d.int(20, 60),
    "spleen": lambda d, e: d.real(13.5, 19.0), "aorta": lambda d, e: d.real(3.1, 5.4),
    "prostate": lambda d, e: d.int(45, 110), "stenosis": lambda d, e: d.pick(("50-69%", "70-99%")),
    "tscore": lambda d, e: d.real(2.5, 3.6), "pressure": lambda d, e: d.int(28, 42), "cc": lambda d, e: d.int(30, 50),
    "weeks": lambda d, e: d.int(*(e.weeks or (20, 20))), "fhr": lambda d, e: d.int(120, 170),
    "ef": lambda d, e: d.int(45, 72), "ml": lambda d, e: d.pick((75, 80, 100)), "gad": lambda d, e: d.pick((7, 10, 15)),
    "mci": lambda d, e: d.pick((5, 10, 20, 25)), "fluoro": lambda d, e: d.real(0.4, 4.5), "days": lambda d, e: d.int(2, 14),
    "tracer": lambda d, e: _TRACERS.get(e.key, "radiotracer"),
    "contrast_agent": lambda d, e: d.pick(("thin and thick barium", "barium of varied consistencies",
                                           "water-soluble contrast")),
    "prior": lambda d, e: f"{d.int(2019, 2022)}-{d.int(1, 12):02d}-{d.int(1, 28):02d}",
}


class _Fill(dict):
    """Template values of one case: fixed ones given, the rest drawn lazily by :data:`_FILL_RULES`."""

    def __init__(self, draw: _Draw, exam: ExamType, fixed: Mapping[str, object]):
        super().__init__(fixed)
        self.draw, self.exam = draw, exam

    def __missing__(self, key: str):
        value = self[key] = _FILL_RULES[key](self.draw, self.exam)
        return value


class _Overlay(dict):
    """A case's template values with a few replaced or added (another side, the indication's name)."""

    def __init__(self, base: Mapping[str, object], **values: object):
        super().__init__(values)
        self.base = base

    def __missing__(self, key: str):
        return self.base[key]


def _fmt(template: str, fill: Mapping[str, object]) -> str:
    return template.format_map(fill) if "{" in template else template


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _side_fill(fill: _Fill, side: str | None) -> Mapping[str, object]:
    if side is None or SIDES[side] == fill["side"]:
        return fill
    word = SIDES[side]
    return _Overlay(fill, side=word, Side=word.capitalize(), SIDE=word.upper())


def _side_part(exam: ExamType, side: str | None) -> str:
    part = _PARTS[exam.key]
    if side is None:
        return part
    return f"{part}, both sides" if side == "B" else f"{SIDES[side]} {part}"


def _finding_side(draw: _Draw, exam_side: str | None, cond: Condition) -> str | None:
    """A lateral exam fixes the side; otherwise the finding falls on a random side."""
    if not cond.sided:
        return exam_side if exam_side in ("R", "L") else None
    if exam_side in ("R", "L"):
        return exam_side
    if "B" in cond.icd and (exam_side == "B" or draw.chance(0.15)):
        return "B"
    return draw.pick("RL")


@dataclass
class _Patient:
    key: str
    sex: str
    age: int


class _Patients:
    """A pool of invented patients, so a patient key repeats across exams."""

    def __init__(self, draw: _Draw, n: int):
        self.draw = draw
        self._keys: set[str] = set()
        self.pool = [self._new() for _ in range(max(1, n // 3))]
        self._fits: dict[str, list[_Patient]] = {}

    def _new(self, sex: str | None = None, ages: tuple[int, int] = (18, 90)) -> _Patient:
        d = self.draw
        key = f"P{d.int(10**7, 10**8 - 1)}"
        while key in self._keys:  # one key, one patient
            key = f"P{d.int(10**7, 10**8 - 1)}"
        self._keys.add(key)
        return _Patient(key, sex or d.pick("FM"), d.int(*ages))

    def pick(self, exam: ExamType) -> _Patient:
        fits = self._fits.get(exam.key)
        if fits is None:
            fits = [p for p in self.pool if exam.sex in (None, p.sex) and exam.ages[0] <= p.age <= exam.ages[1]]
            self._fits[exam.key] = fits
        if not fits or self.draw.chance(0.05):
            fits.append(self._new(exam.sex, exam.ages))
        return self.draw.pick(fits)


@lru_cache(maxsize=None)
def _fitting(exam: ExamType, sex: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The exam's indications, findings and incidentals a patient of this sex can have."""
    return tuple(tuple(k for k in keys if CONDITIONS[k].sex in (None, sex))
                 for keys in (exam.indications, exam.findings, exam.incidentals))


def _pick_codes(draw: _Draw, exam: ExamType, side: str | None, normal: bool, sex: str):
    """The coded conditions with their sides, the indication and its side."""
    indications, findings, incidentals = _fitting(exam, sex)
    indication = CONDITIONS[draw.pick(indications)]
    ind_side = _finding_side(draw, side, indication) if indication.sided else side
    coded = [(CONDITIONS[k], None) for k in exam.status]
    normal = normal or not findings  # nothing this patient can have was found: code the indication
    if indication.kind == T or normal:
        coded.append((indication, ind_side))
    if not normal:
        chosen = [draw.pick(findings)]
        if len(findings) > 1 and draw.chance(0.2):
            chosen.append(draw.pick([k for k in findings if k != chosen[0]]))
        if incidentals and draw.chance(0.35):
            inc = draw.pick(incidentals)
            if inc not in chosen:
                chosen.append(inc)
        more = [CONDITIONS[k] for k in chosen]
    elif indication.kind == S and len(indications) > 1 and draw.chance(0.15):
        more = [c for c in (CONDITIONS[draw.pick(indications)],) if c.kind == S]
    else:
        more = []
    for cond in more:  # one code per category: a coder never lists N20.0 with N20.1, or J18.1 with J18.9
        if all(cond.category != c.category for c, _ in coded):
            coded.append((cond, _finding_side(draw, side, cond)))
    return coded[:4], indication, ind_side


def _reason(draw: _Draw, indication: Condition, fill: Mapping[str, object], others: list[str]) -> str:
    name = _fmt(draw.pick(indication.names), fill)
    forms = _REASON_FORMS_STATUS if indication.kind == T else _REASON_FORMS if indication.ruleout else _REASON_FORMS_PLAIN
    form = draw.pick(forms)
    text = form.format_map(_Overlay(fill, name=name, Name=_cap(name),
                                    ruleout=draw.pick(indication.ruleout) if indication.ruleout else ""))
    return " ".join([text, *(f"{_cap(extra)}." for extra in others)])  # a coded symptom or status must be stated


_REASON_FORMS_PLAIN = tuple(f for f in _REASON_FORMS if "ruleout" not in f)
_REASON_FORMS_STATUS = ("{Name}.", "{age} y/o {sexw}, {name}.", "Hx: {name}.")


def _one_case(draw: _Draw, seed: int, i: int, patients: _Patients, base: date) -> Case:
    exam = draw.weighted(EXAMS, _EXAM_CUM)
    patient = patients.pick(exam)
    side = None
    if exam.side == "lat":
        side = draw.pick("RL")
    elif exam.side == "lat50":
        side = "B" if draw.chance(0.12) else draw.pick("RL")
    site, site_kind, _ = draw.weighted(SITES, _SITE_CUM)
    place = draw.pick(PLACES[site_kind])
    normal = not exam.findings or draw.chance(exam.p_normal)
    side_word = SIDES[side] if side else draw.pick(("right", "left"))
    fill = _Fill(draw, exam, {"side": side_word, "Side": side_word.capitalize(), "SIDE": side_word.upper(),
                              "part": _side_part(exam, side),
                              "age": patient.age, "sexw": "female" if patient.sex == "F" else "male"})
    coded, indication, ind_side = _pick_codes(draw, exam, side, normal, patient.sex)

    # --- codes: component modifier (26/TC), laterality (RT/LT/50), distinct (59), then repeat/reduced
    icd = [cond.code(s, _side_fill(fill, s)) for cond, s in coded]
    repeat = exam.key == "xr_chest_1v" and draw.chance(0.08)
    reduced = exam.modality == "mri" and draw.chance(0.04)
    mods = [m for m in (COMPONENT_MODIFIER[site_kind], SIDE_MODIFIER.get(side or ""), exam.distinct,
                        "76" if repeat else None, "52" if reduced else None) if m]
    codes = CodeLine(exam.cpt, tuple(mods), tuple(icd))  # normal form, one code per category (both tested)

    # --- text
    desc = _fmt(draw.pick(exam.names), fill)
    stated = [_fmt(draw.pick(c.names), _side_fill(fill, s)) for c, s in coded if c.kind != F and c is not indication]
    reason = _reason(draw, indication, _side_fill(fill, ind_side), stated)
    findings, impressions = [], []
    positive = [(c, s) for c, s in coded if c.kind == F]
    for n, (cond, s) in enumerate(positive):
        f = _side_fill(fill, s)
        findings.append(_fmt(draw.pick(cond.findings), f))
        impression = _fmt(draw.pick(cond.impressions), f)
        incidental = n >= 1 and draw.chance(0.4)
        impressions.append(f"Incidental: {impression[0].lower()}{impression[1:]}" if incidental else impression)
    avoid = [w for c, _ in positive for w in c.avoid]
    normals = [t for t in _NORMALS_LOWER[exam.region] if not any(w in t[1] for w in avoid)]
    picked = [_fmt(normals[j][0], fill) for j in _sample(draw, len(normals), draw.int(2, 4))]
    findings[1:1] = picked
    if not positive:
        ind_name = _fmt(indication.names[0], _side_fill(fill, ind_side))
        forms = _NORMAL_IMPRESSIONS + _REGION_NORMAL_IMPRESSIONS.get(exam.region, ()) * 2
        impressions.append(_fmt(draw.pick(forms), {"name": ind_name}))
    impressions[-1] += draw.pick(_IMPRESSION_TAILS)
    if repeat:
        findings.insert(0, "Repeat radiograph, same day, after repositioning of the support lines.")
    if reduced:
        findings.insert(0, "Reduced service: the study was stopped early for patient discomfort; limited sequences obtained.")
    impression_text = (impressions[0] if len(impressions) == 1
                       else "\n".join(f"{n}. {t}" for n, t in enumerate(impressions, 1)))
    body = (f"LOCATION: {place}, {site}.\nTECHNIQUE: {_fmt(draw.pick(exam.technique), fill)}\n"
            f"COMPARISON: {_fmt(draw.pick(_COMPARISONS), fill)}\nFINDINGS:\n{' '.join(findings)}\n"
            f"IMPRESSION:\n{impression_text}")
    layout = "explicit" if draw.chance(0.65) else "embedded"
    if layout == "embedded":  # the report body carries the exam and the reason; the fields stay empty
        body = f"{draw.pick(EXAM_LABELS)}: {desc}\n{draw.pick(_HISTORY_LABELS)}: {reason}\n{body}"
        desc, reason = "", ""
    else:  # the fields are filled; the body repeats the indication (as dictated reports do) and the
        # technique names the exam, so the codes stay inferable when a prompt shows the body alone
        body = f"{draw.pick(_HISTORY_LABELS)}: {reason}\n{body}"

    # --- specificity variant: a first-pass coder used the unspecified sibling; the reviewer corrected it
    original = None
    choices = [(n, cond.unspecified(s)) for n, (cond, s) in enumerate(coded)
               if cond.unspecified(s) and cond.unspecified(s) != icd[n]]
    if choices and draw.chance(SPECIFICITY_RATE):
        n, unspec = draw.pick(choices)
        original = CodeLine.of(codes.cpt, codes.modifiers, icd[:n] + [unspec] + icd[n + 1:])

    exam_day = base + timedelta(days=draw.int(0, 1094))
    reviewed = exam_day + timedelta(days=draw.int(1, 14))
    return Case(
        id=f"syn-{seed}-{i:06d}", exam_description=desc, reason_for_exam=reason, report_text=body,
        codes=codes, original_codes=original, patient_key=patient.key, accession=f"A{seed % 1000:03d}{i:08d}",
        exam_date=exam_day.isoformat(), site=site,
        reviewed_at=f"{reviewed.isoformat()}T{draw.int(7, 18):02d}:{draw.int(0, 59):02d}:00Z",
        meta={"modality": exam.modality, "exam_type": exam.key, "layout": layout, "hard": codes.is_hard,
              "specificity": original is not None, "normal": not positive, "setting": site_kind},
    )


# Chance that a case with an unspecified sibling available becomes a specificity pair (~10% of all cases).
SPECIFICITY_RATE = 0.2
_NORMALS_LOWER = {region: [(t, t.lower()) for t in texts] for region, texts in NORMALS.items()}


def _sample(draw: _Draw, n: int, k: int) -> list[int]:
    """``k`` distinct indexes below ``n`` (partial Fisher-Yates)."""
    idx = list(range(n))
    k = min(k, n)
    for j in range(k):
        r = j + int(draw.random() * (n - j))
        idx[j], idx[r] = idx[r], idx[j]
    return idx[:k]


def generate_cases(n: int, seed: int) -> list[Case]:
    """``n`` synthetic coder-reviewed radiology cases; the same seed always gives the same cases."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    draw = _Draw(seed)
    patients = _Patients(draw, n)
    base = date(2023, 1, 1)
    return [_one_case(draw, seed, i, patients, base) for i in range(n)]


def summary(cases: list[Case]) -> dict[str, object]:
    """Counts a user checks before training: exam types, modalities, layouts, hard and specificity cases."""
    def count(key: str) -> dict[str, int]:
        return dict(Counter(str(c.meta.get(key)) for c in cases).most_common())

    return {"cases": len(cases), "exam_types": len({c.meta.get("exam_type") for c in cases}),
            "patients": len({c.patient_key for c in cases}), "modalities": count("modality"),
            "layouts": count("layout"), "hard": sum(bool(c.meta.get("hard")) for c in cases),
            "specificity": sum(bool(c.meta.get("specificity")) for c in cases),
            "normal": sum(bool(c.meta.get("normal")) for c in cases),
            "distinct_icd": len({i for c in cases for i in c.codes.icd}),
            "distinct_cpt": len({p for c in cases for p in c.codes.cpt})}
