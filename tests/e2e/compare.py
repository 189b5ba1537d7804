"""What a retrieved instance must look like next to the instance that was stored."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from pacs_cae.dicom.uids import derive_lossy_uid

#: The attributes the archive changes (or adds) on a CAE-reconstructed instance; every other attribute of
#: the received instance must come back equal.
LOSSY_CHANGED = {
    Tag(k) for k in (
        "SOPInstanceUID", "ImageType", "LossyImageCompression", "LossyImageCompressionRatio",
        "LossyImageCompressionMethod", "DerivationDescription", "DerivationCodeSequence", "SourceImageSequence",
        "PixelData",
    )
}


def dataset_tags(ds: Dataset) -> set[int]:
    """Top-level tags outside the file meta group (0002), which each tool writes itself."""
    return {int(elem.tag) for elem in ds if elem.tag.group != 0x0002}


def unequal_attributes(expected: Dataset, actual: Dataset, skip: Iterable[int] = ()) -> list[str]:
    """Keywords of the elements of ``expected`` that ``actual`` lacks or holds with another value."""
    skipped = set(skip)
    problems = []
    for tag in sorted(dataset_tags(expected) - skipped):
        if tag not in actual:
            problems.append(f"{expected[tag].keyword or hex(tag)} missing")
        elif actual[tag].value != expected[tag].value:
            problems.append(f"{expected[tag].keyword or hex(tag)}: {actual[tag].value!r} != {expected[tag].value!r}")
    return problems


def psnr_db(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR with the slice's own value range as peak (the codec normalises each slice by its min/max)."""
    a = original.astype(np.float64)
    b = decoded.astype(np.float64)
    mse = float(((a - b) ** 2).mean())
    peak = float(a.max() - a.min()) or 1.0
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def check_lossless(original: Dataset, retrieved: Dataset) -> None:
    """Byte-exact: the same elements, every value equal (Pixel Data bytes included)."""
    assert dataset_tags(retrieved) == dataset_tags(original), (
        f"{original.SOPInstanceUID}: element sets differ: "
        f"extra {sorted(hex(t) for t in dataset_tags(retrieved) - dataset_tags(original))}, "
        f"missing {sorted(hex(t) for t in dataset_tags(original) - dataset_tags(retrieved))}")
    assert not unequal_attributes(original, retrieved), unequal_attributes(original, retrieved)
    assert "LossyImageCompression" not in retrieved or retrieved.LossyImageCompression == original.get(
        "LossyImageCompression")


def check_lossy(original: Dataset, retrieved: Dataset, *, model_id: str, floor_db: float) -> float:
    """Lossy declared per PS3.3, derived UID, unchanged attributes, PSNR above the gate; returns the PSNR."""
    uid = str(original.SOPInstanceUID)
    assert retrieved.SOPInstanceUID == derive_lossy_uid(uid, model_id), "served UID is not the derived one"
    assert retrieved.SOPInstanceUID != uid
    problems = unequal_attributes(original, retrieved, skip=LOSSY_CHANGED)
    assert not problems, f"{uid}: attributes changed by the archive: {problems}"
    assert retrieved.LossyImageCompression == "01"
    ratios = retrieved["LossyImageCompressionRatio"]
    ratio = float(ratios.value[-1] if ratios.VM > 1 else ratios.value)
    assert ratio > 1.0, f"compression ratio {ratio}"
    assert retrieved.LossyImageCompressionMethod
    assert retrieved.ImageType[0] == "DERIVED"
    assert list(retrieved.ImageType[1:]) == list(original.ImageType[1:])
    assert retrieved.DerivationDescription
    assert [item.CodeValue for item in retrieved.DerivationCodeSequence][-1] == "113040"
    assert retrieved.DerivationCodeSequence[-1].CodingSchemeDesignator == "DCM"
    source = retrieved.SourceImageSequence[-1]
    assert source.ReferencedSOPInstanceUID == uid
    assert source.ReferencedSOPClassUID == original.SOPClassUID
    assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
    before, after = original.pixel_array, retrieved.pixel_array
    assert after.shape == before.shape and after.dtype == before.dtype
    value = psnr_db(before, after)
    assert value >= floor_db, f"{uid}: PSNR {value:.2f} dB below the gate floor {floor_db} dB"
    return value
