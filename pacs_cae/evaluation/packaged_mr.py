"""Real clinical MR that ships inside Python packages: a small held-out set for evaluation only.

These are scanner images (not templates), stored losslessly or uncompressed, each a different acquisition.
They are for ``pacs-cae evaluate --real-mr`` and must never be used for training (docs/evaluation.md).

None of them is a brain (an abdomen, a shoulder, a narrow band of anatomy, two 64x64 crops), and they come in
four sizes: compare codecs per image (``per_slice`` in ``--json``), since the summary's mean PSNR weights every
slice alike while its bpp weights the 1024x1024 one most. nibabel's ``0.dcm``/``1.dcm`` (a Siemens mosaic
header) carry a synthetic ramp, not anatomy, and are left out. So are copies that come from lossy compression
(pydicom-data's ``MR2_UNCI.dcm`` is decoded from the irreversible ``MR2_J2KI.dcm``), duplicates of the same
pixels in other transfer syntaxes, and pydicom's ``examples_overlay.dcm`` when pydicom-data's full
``MR-SIEMENS-DICOM-WithOverlays.dcm`` (same acquisition, uncropped) is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: (package, path inside it, what it is). Order = the order slices are reported in.
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("data_store", "data/MR-SIEMENS-DICOM-WithOverlays.dcm", "Siemens abdomen, 484x484, 12 bits (pydicom-data)"),
    ("pydicom", "data/test_files/examples_overlay.dcm", "Siemens abdomen, crop of the above (pydicom)"),
    ("data_store", "data/MR2_UNCR.dcm", "Philips T1 SE shoulder, 1024x1024, 12 bits (pydicom-data)"),
    ("nibabel", "nicom/tests/data/slicethickness_empty_string.dcm",
     "Siemens, 384x384 (a narrow band of anatomy, mostly background), 12 bits (nibabel)"),
    ("pydicom", "data/test_files/MR_small.dcm", "Toshiba, 64x64, 16 bits (pydicom)"),
    ("data_store", "data/emri_small.dcm", "10 frames 64x64, 12 bits (pydicom-data)"),
)

#: pydicom's crop is left out when the full image is there.
_SUPERSEDED = {"data/test_files/examples_overlay.dcm": "data/MR-SIEMENS-DICOM-WithOverlays.dcm"}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_mr_files() -> list[tuple[Path, str]]:
    """The installed real MR files as (path, description); an empty list when none of the packages is there."""
    found: dict[str, tuple[Path, str]] = {}
    for package, inner, what in CANDIDATES:
        base = _package_dir(package)
        if base is not None and (base / inner).is_file():
            found[inner] = (base / inner, what)
    for crop, full in _SUPERSEDED.items():
        if full in found:
            found.pop(crop, None)
    return list(found.values())
