"""Generated DICOM objects for archive and end-to-end tests (no patient data, no downloads).

Every factory returns :class:`pydicom.dataset.FileDataset` objects with file meta in Explicit VR Little
Endian, ready for ``ds.save_as(path, enforce_file_format=True)`` or for ``Archive.store(ds)``.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")
SECONDARY_CAPTURE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
BASIC_TEXT_SR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.88.11")
GRAYSCALE_PR_STORAGE = UID("1.2.840.10008.5.1.4.1.1.11.1")

TEST_ROOT = "1.2.826.0.1.3680043.8.498.77."  # under pydicom's root: test objects only


def _file_dataset(sop_class: UID, sop_instance: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _patient_study(ds: Dataset, *, patient_id: str, patient_name: str, study_uid: str, study_date: str,
                   accession: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Referrer^Test"
    ds.StudyDescription = "pacs-cae generated study"


def phantom_slice(rows: int, cols: int, index: int = 0, n_slices: int = 1, *, seed: int = 0) -> np.ndarray:
    """A brain-phantom-like slice in [0, 1]: nested ellipses, a smooth bias field, a little noise.

    The ellipses shrink towards the ends of the series so that slices differ like an axial stack.
    """
    y, x = np.mgrid[-1:1:rows * 1j, -1:1:cols * 1j]
    z = 0.0 if n_slices <= 1 else (index / (n_slices - 1)) * 2 - 1
    scale = np.sqrt(max(1e-3, 1 - 0.6 * z * z))
    img = np.zeros((rows, cols))
    # (cx, cy, ax, ay, angle, value): skull, brain, ventricles, lesions
    for cx, cy, ax, ay, ang, val in [
        (0, 0, 0.85, 0.95, 0.0, 0.35),
        (0, 0.02, 0.78, 0.88, 0.0, 0.25),
        (-0.22, 0.05, 0.10, 0.30, 0.3, -0.2),
        (0.22, 0.05, 0.10, 0.30, -0.3, -0.2),
        (0.3, -0.4, 0.08, 0.06, 0.0, 0.3),
        (-0.35, -0.35, 0.05, 0.05, 0.0, 0.25),
    ]:
        c, s = np.cos(ang), np.sin(ang)
        xr, yr = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
        img[(xr / (ax * scale)) ** 2 + (yr / (ay * scale)) ** 2 <= 1] += val
    bias = 0.85 + 0.15 * np.cos(1.3 * x + 0.7 * y + 0.5 * z)
    texture = 0.04 * np.sin(9 * x + 3 * z) * np.cos(7 * y)
    rng = np.random.default_rng(seed * 1000 + index)
    img = (img + texture * (img > 0)) * bias + rng.normal(0, 0.005, img.shape)
    return np.clip(img, 0, 1)


def set_pixels(ds: Dataset, pixels: np.ndarray, *, bits_stored: int, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16 if bits_stored > 8 else 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(16, False): "<u2", (16, True): "<i2", (8, False): "u1", (8, True): "i1"}[
        (int(ds.BitsAllocated), signed)]
    data = pixels.astype(dtype).tobytes()
    ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"


def make_mr_series(n_slices: int, rows: int = 512, cols: int = 512, bits_stored: int = 12, *,
                   signed: bool = False, patient_id: str = "PCAE0001", patient_name: str = "Phantom^Brain",
                   study_uid: str | None = None, series_uid: str | None = None, series_number: int = 1,
                   study_date: str = "20240315", accession: str = "ACC0001", seed: int = 0) -> list[FileDataset]:
    """An axial MR series of phantom slices, ``bits_stored`` bits (signed: centred on zero)."""
    study_uid = study_uid or generate_uid(TEST_ROOT)
    series_uid = series_uid or generate_uid(TEST_ROOT)
    frame_uid = generate_uid(TEST_ROOT)
    top = (1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1
    out = []
    for i in range(n_slices):
        ds = _file_dataset(MR_IMAGE_STORAGE, generate_uid(TEST_ROOT))
        _patient_study(ds, patient_id=patient_id, patient_name=patient_name, study_uid=study_uid,
                       study_date=study_date, accession=accession)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.Modality = "MR"
        ds.Manufacturer = "pacs-cae factories"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "T1 axial phantom"
        ds.BodyPartExamined = "BRAIN"
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = i + 1
        ds.ContentDate = study_date
        ds.ContentTime = "101600"
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = "4.6"
        ds.RepetitionTime = "9.8"
        ds.MagneticFieldStrength = "3"
        ds.SliceThickness = "1.0"
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImagePositionPatient = [-128.0, -128.0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = float(i)
        ds.WindowCenter = top // 2
        ds.WindowWidth = top
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        img = phantom_slice(rows, cols, i, n_slices, seed=seed)
        if signed:
            values = np.round(img * 1.8 * top - 0.9 * top)
        else:
            values = np.round(img * 0.95 * top)
        set_pixels(ds, np.clip(values, -top - 1 if signed else 0, top), bits_stored=bits_stored, signed=signed)
        out.append(ds)
    return out


def make_odd_size(rows: int = 2000, cols: int = 100, **kwargs) -> FileDataset:
    """One MR slice of an unusual size; the default 2000x100 is outside the codec policy (lossless)."""
    kwargs.setdefault("accession", "ACC0002")
    ds = make_mr_series(1, rows, cols, **kwargs)[0]
    ds.SeriesDescription = f"odd size {rows}x{cols}"
    return ds


def make_rgb(rows: int = 64, cols: int = 96, **kwargs) -> FileDataset:
    """A colour Secondary Capture image (RGB, 8 bits): never sent to the codec."""
    study_uid = kwargs.get("study_uid") or generate_uid(TEST_ROOT)
    ds = _file_dataset(SECONDARY_CAPTURE_STORAGE, generate_uid(TEST_ROOT))
    _patient_study(ds, patient_id=kwargs.get("patient_id", "PCAE0001"),
                   patient_name=kwargs.get("patient_name", "Phantom^Brain"), study_uid=study_uid,
                   study_date=kwargs.get("study_date", "20240315"), accession=kwargs.get("accession", "ACC0003"))
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesInstanceUID = kwargs.get("series_uid") or generate_uid(TEST_ROOT)
    ds.SeriesNumber = 90
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    y, x = np.mgrid[0:rows, 0:cols]
    rgb = np.stack([x * 255 // max(cols - 1, 1), y * 255 // max(rows - 1, 1), (x + y) % 256], axis=-1)
    ds.PixelData = rgb.astype("u1").tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def make_sr(**kwargs) -> FileDataset:
    """A Basic Text SR document: a non-image object with nested sequences and no Pixel Data."""
    study_uid = kwargs.get("study_uid") or generate_uid(TEST_ROOT)
    ds = _file_dataset(BASIC_TEXT_SR_STORAGE, generate_uid(TEST_ROOT))
    _patient_study(ds, patient_id=kwargs.get("patient_id", "PCAE0001"),
                   patient_name=kwargs.get("patient_name", "Phantom^Brain"), study_uid=study_uid,
                   study_date=kwargs.get("study_date", "20240315"), accession=kwargs.get("accession", "ACC0004"))
    ds.Modality = "SR"
    ds.SeriesInstanceUID = kwargs.get("series_uid") or generate_uid(TEST_ROOT)
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Manufacturer = "pacs-cae factories"
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = _dt.time(10, 30).strftime("%H%M%S")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "18748-4", "LN", "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([title])
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = "121071", "DCM", "Finding"
    finding.ConceptNameCodeSequence = Sequence([name])
    finding.TextValue = "Generated phantom: no abnormality (this is test data)."
    ds.ContentSequence = Sequence([finding])
    return ds


def make_presentation_state(referenced: Dataset | None = None, **kwargs) -> FileDataset:
    """A Grayscale Softcopy Presentation State (no Pixel Data) referencing ``referenced`` if given."""
    study_uid = kwargs.get("study_uid") or (referenced.StudyInstanceUID if referenced else generate_uid(TEST_ROOT))
    ds = _file_dataset(GRAYSCALE_PR_STORAGE, generate_uid(TEST_ROOT))
    _patient_study(ds, patient_id=kwargs.get("patient_id", "PCAE0001"),
                   patient_name=kwargs.get("patient_name", "Phantom^Brain"), study_uid=study_uid,
                   study_date=kwargs.get("study_date", "20240315"), accession=kwargs.get("accession", "ACC0005"))
    ds.Modality = "PR"
    ds.SeriesInstanceUID = kwargs.get("series_uid") or generate_uid(TEST_ROOT)
    ds.SeriesNumber = 98
    ds.InstanceNumber = 1
    ds.ContentLabel = "WINDOW"
    ds.ContentDescription = "soft tissue window"
    ds.PresentationCreationDate = ds.StudyDate
    ds.PresentationCreationTime = "103000"
    ds.ContentCreatorName = "Reader^Test"
    ds.PresentationLUTShape = "IDENTITY"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "1200", "2400"
    ds.SoftcopyVOILUTSequence = Sequence([voi])
    if referenced is not None:
        image = Dataset()
        image.ReferencedSOPClassUID = referenced.SOPClassUID
        image.ReferencedSOPInstanceUID = referenced.SOPInstanceUID
        series = Dataset()
        series.SeriesInstanceUID = referenced.SeriesInstanceUID
        series.ReferencedImageSequence = Sequence([image])
        ds.ReferencedSeriesSequence = Sequence([series])
    return ds


__all__ = [
    "BASIC_TEXT_SR_STORAGE",
    "GRAYSCALE_PR_STORAGE",
    "MR_IMAGE_STORAGE",
    "SECONDARY_CAPTURE_STORAGE",
    "make_mr_series",
    "make_odd_size",
    "make_presentation_state",
    "make_rgb",
    "make_sr",
    "phantom_slice",
]
