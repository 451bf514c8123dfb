"""Synthetic radiology cases: the embedded default data set (no patient data, all invented).

The generator is table driven: an :class:`ExamType` fixes the CPT code(s) and the laterality rule,
a :class:`Condition` fixes an ICD-10-CM code and the words that name it in the report, and the
place of service fixes the component modifier. So the mapping text -> code line is learnable.
The tables live in ``conditions``, ``exams``, ``setting`` and ``phrasing``; ``generator`` draws from them.
"""

from nyxmed.synth.conditions import CONDITIONS, Condition
from nyxmed.synth.exams import EXAM_TYPES, EXAMS, MODALITIES, NORMALS, ExamType
from nyxmed.synth.generator import LAYOUTS, SPECIFICITY_RATE, generate_cases, summary
from nyxmed.synth.phrasing import EXAM_LABELS
from nyxmed.synth.setting import COMPONENT_MODIFIER, PLACES, SIDE_MODIFIER, SIDES, SITES

__all__ = ["COMPONENT_MODIFIER", "CONDITIONS", "EXAMS", "EXAM_LABELS", "EXAM_TYPES", "LAYOUTS", "MODALITIES",
           "NORMALS", "PLACES", "SIDES", "SIDE_MODIFIER", "SITES", "SPECIFICITY_RATE", "Condition", "ExamType",
           "generate_cases", "summary"]
