"""Training and evaluation volumes: NIfTI files and DICOM series folders, as float32 3-D arrays.

Both kinds of source end up as a :class:`Volume` so the sampler and the evaluator never care where slices came
from. Slices are always taken along the array's last axis as "axial" for NIfTI (RAS-ish orientation) and along the
stacking axis for DICOM series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3-D image with its voxel spacing (mm), slices along axis 2."""

    name: str
    data: np.ndarray  # float32, shape (X, Y, Z)
    spacing: tuple[float, float, float]


def mni152_template_path() -> Path:
    """The MNI152 2009a T1 template shipped inside the nilearn wheel (no download)."""
    import nilearn  # imported lazily: only training/evaluation need it

    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise FileNotFoundError(f"MNI152 template not found in the nilearn package at {path}")
    return path


def load_nifti(path: Path) -> Volume:
    """Load a 3-D NIfTI volume (4-D volumes: first frame)."""
    import nibabel as nib

    img = nib.load(str(path))
    assert isinstance(img, nib.spatialimages.SpatialImage)  # NIfTI-1/2 images are spatial images
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    name = Path(path).name.removesuffix(".gz").removesuffix(".nii")
    return Volume(name=name, data=data, spacing=zooms)  # type: ignore[arg-type]


def load_dicom_folder(folder: Path) -> list[Volume]:
    """Every single-frame monochrome series in a folder (recursively), one Volume per series
    (read by :mod:`pacs_cae.dicom.series`, as evaluation reads DICOM)."""
    from pacs_cae.dicom.series import read_files, read_series

    volumes = []
    for (_, uid), frames in read_series((str(folder), ds) for ds in read_files(Path(folder))).items():
        single = [f for f in frames if f.frames_in_instance == 1]
        if not single or len({f.pixels.shape for f in single}) != 1:
            continue
        data = np.stack([f.pixels.astype(np.float32).T for f in single], axis=2)  # (cols, rows, slices) like NIfTI
        sx, sy = single[0].spacing
        volumes.append(Volume(name=f"dicom:{uid}", data=data, spacing=(sy, sx, 1.0)))
    return volumes


def load_sources(paths: list[Path]) -> list[Volume]:
    """NIfTI files and DICOM folders, in order; a folder yields one volume per series."""
    volumes: list[Volume] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = load_dicom_folder(p)
            if not found:
                raise ValueError(f"{p}: no DICOM image series found")
            volumes += found
        elif p.name.endswith((".nii", ".nii.gz")):
            volumes.append(load_nifti(p))
        else:
            raise ValueError(f"{p}: not a NIfTI file or a folder of DICOM files")
    return volumes
