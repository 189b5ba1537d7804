"""The default data set: real brain MRI that ships with packages, so training needs no download.

Training: Colin27 (Debian's mricron-data ``ch2``, ``ch2better``), the JHU T1 template (``jhu189``) and the INIA19
macaque T1 (``inia19-t1-brain``). Held out for validation and the model card: the MNI152 2009a T1 template from
the nilearn wheel — an average of 152 other people's brains, never seen in training.
"""

from __future__ import annotations

from pathlib import Path

from pacs_cae.train.sources import mni152_template_path

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
DEFAULT_TRAIN_FILES = ("ch2.nii.gz", "ch2better.nii.gz", "jhu189.nii.gz", "inia19-t1-brain.nii.gz")


def default_train_paths() -> list[Path]:
    paths = [MRICRON_TEMPLATES / name for name in DEFAULT_TRAIN_FILES]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"default training volumes missing (apt-get install mricron-data): {missing}")
    return paths


def default_val_paths() -> list[Path]:
    return [mni152_template_path()]
