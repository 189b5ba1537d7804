"""Fixtures for the evaluation/export tests: a tiny NIfTI head, a tiny DICOM series, a models dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pacs_cae.codec.weights import initial_model, save_model

TEST_MODEL = "tiny-init"


def head_volume(shape: tuple[int, int, int] = (40, 48, 12), seed: int = 0) -> np.ndarray:
    """A float ellipsoid 'head' with texture and noise, in scanner-like units, air around it."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 1.2) ** 2)
    head = np.clip(1.1 - r, 0, None) * (1 + 0.3 * np.sin(7 * x) * np.cos(5 * y))
    head += np.random.default_rng(seed).normal(0, 0.01, shape) * (r < 1)
    return (np.clip(head, 0, None) * 900).astype(np.float32)


@pytest.fixture(scope="session")
def nifti_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import nibabel as nib

    path = tmp_path_factory.mktemp("nifti") / "head.nii.gz"
    nib.save(nib.Nifti1Image(head_volume(), np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return path


@pytest.fixture(scope="session")
def dicom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 64x64 signed 16-bit MR instances (BitsStored 12) of one series."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder = tmp_path_factory.mktemp("dicom")
    vol = head_volume((64, 64, 5), seed=1)
    series_uid = generate_uid()
    for k in range(vol.shape[2]):
        pixels = (np.rint(vol[:, :, k] / vol.max() * 2000) - 1000).astype(np.int16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = series_uid, generate_uid(), "MR"
        ds.InstanceNumber, ds.ImagePositionPatient = k + 1, [0.0, 0.0, float(k)]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with the deterministic untrained network under ``tiny-init``."""
    base = tmp_path_factory.mktemp("models")
    save_model(initial_model(0), base / TEST_MODEL, model_id=TEST_MODEL, trained=False)
    return base


@pytest.fixture(scope="session")
def model_id() -> str:
    """The id of the model in :func:`models_dir`."""
    return TEST_MODEL
