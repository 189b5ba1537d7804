"""The evaluation tests use the same tiny NIfTI head, DICOM series and models dir as the training tests."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.train.conftest import dicom_dir, model_id, models_dir, nifti_path  # noqa: F401
