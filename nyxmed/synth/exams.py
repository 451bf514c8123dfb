"""The exam types of the synthetic cases (CPT codes, laterality, vocabulary) and normal findings by region.

Exam descriptions are our own plain wording; no CPT descriptor text ships here.
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("radiograph", "ct", "mri", "ultrasound", "mammography", "nuclear_medicine", "fluoroscopy",
              "interventional", "densitometry")

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


PARTS = {e.key: e.part or _part(e.names[0]) for e in EXAMS}
