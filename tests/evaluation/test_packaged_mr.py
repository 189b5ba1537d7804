"""The real clinical MR shipped in packages (pydicom-data, nibabel, pydicom) and ``evaluate --real-mr``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.evaluation.eval_slices import load_eval_slices
from pacs_cae.evaluation.packaged_mr import packaged_mr_files


def test_packaged_mr_is_real_scanner_data_at_its_own_bit_depth() -> None:
    files = packaged_mr_files()
    names = [p.name for p, _ in files]
    # pydicom-data (test extra) has the full Siemens image, so pydicom's crop of it is left out; no lossy copy
    assert "MR-SIEMENS-DICOM-WithOverlays.dcm" in names and "examples_overlay.dcm" not in names
    assert "MR2_UNCR.dcm" in names and "MR2_UNCI.dcm" not in names
    slices = load_eval_slices([p for p, _ in files], count=None)
    shapes = {s.pixels.shape for s in slices}
    assert {(484, 484), (1024, 1024), (384, 384), (64, 64)} <= shapes and (256, 256) not in shapes
    assert {s.bits_stored for s in slices} <= {12, 16} and all(s.pixels.dtype.kind in "iu" for s in slices)
    assert len({s.sop_instance_uid for s in slices}) == len(files)  # the multi-frame file gives several slices


def test_evaluate_real_mr(models_dir, model_id) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--real-mr", "--model", model_id, "--models-dir",
                                      str(models_dir), "--no-standard", "--slices", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["slices"]) == len(packaged_mr_files())  # one slice per series with --slices 1
    assert "--real-mr" in report["settings"]["command"]
