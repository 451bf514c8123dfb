"""Where a synthetic exam is billed and on which side: sites, places of service and the modifiers they fix."""

SIDES = {"R": "right", "L": "left", "B": "bilateral"}
SIDE_MODIFIER = {"R": "RT", "L": "LT", "B": "50"}

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
