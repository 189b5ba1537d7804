"""`pacs-cae train` end to end on a tiny synthetic NIfTI volume: runs, logs, checkpoints, resumes."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.train.loop import TrainConfig, learning_rate, quantize_latent


def _phantom_volume(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:12, 0:48, 0:40]
    head = ((x - 20) / 17.0) ** 2 + ((y - 24) / 21.0) ** 2 <= 1
    vol = np.where(head, 300 + 60 * np.sin(x / 4.0) + 40 * np.cos(y / 5.0) + z, 0).astype(np.float32)
    vol += rng.normal(0, 2, vol.shape).astype(np.float32) * head
    nib.save(nib.Nifti1Image(np.transpose(vol, (2, 1, 0)), np.eye(4)), str(path))
    return path


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_train_writes_log_and_checkpoints_then_resumes(tmp_path: Path) -> None:
    train_vol = _phantom_volume(tmp_path / "train.nii.gz", 0)
    val_vol = _phantom_volume(tmp_path / "val.nii.gz", 1)
    run = tmp_path / "run"
    common = [
        str(train_vol),
        "--val",
        str(val_vol),
        "--run-dir",
        str(run),
        "--size",
        "64",
        "--crop",
        "32",
        "--batch-size",
        "2",
        "--val-every",
        "2",
        "--val-slices",
        "2",
        "--device",
        "cpu",
    ]
    _run([*common, "--steps", "4"])
    assert (run / "last.pt").exists() and (run / "best.pt").exists()
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 4
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert rows[1]["val_psnr_quantized_db"] and float(rows[1]["val_psnr_quantized_db"]) > 0

    _run([*common, "--steps", "6", "--resume"])
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 6
    with (run / "log.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]


def test_train_refuses_held_out_volume_in_training(tmp_path: Path) -> None:
    vol = _phantom_volume(tmp_path / "v.nii.gz", 0)
    result = CliRunner().invoke(app, ["train", str(vol), "--val", str(vol), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "held-out" in result.output


def test_schedule_warms_up_then_decays_to_min_lr() -> None:
    cfg = TrainConfig(steps=1000, warmup_steps=100, lr=1e-3, min_lr=1e-5)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 99) == pytest.approx(1e-3)
    assert learning_rate(cfg, 550) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)
    assert learning_rate(cfg, 1000) == pytest.approx(1e-5)


def test_validation_quantisation_is_within_one_step_eq2_floors() -> None:
    z = torch.randn(2, 8, 4, 4)
    zq = quantize_latent(z)
    span = (z.flatten(1).max(1).values - z.flatten(1).min(1).values).view(2, 1, 1, 1)
    assert torch.all((z - zq).abs() <= span / 255 + 1e-6)


def test_train_takes_a_dicom_series_folder(tmp_path: Path) -> None:
    """A folder of DICOM MR slices is a training source like a NIfTI volume (one volume per series)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pacs_cae.testing.factories import make_mr_series

    folder = tmp_path / "dicom"
    folder.mkdir()
    for i, ds in enumerate(make_mr_series(4, 64, 64, 12)):
        ds.save_as(folder / f"{i}.dcm", enforce_file_format=True)
    val_vol = _phantom_volume(tmp_path / "val.nii.gz", 1)
    run = tmp_path / "run"
    _run([str(folder), "--val", str(val_vol), "--run-dir", str(run), "--size", "64", "--crop", "32",
          "--batch-size", "2", "--steps", "2", "--val-every", "2", "--val-slices", "1", "--device", "cpu"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["config"]["train_names"] == [str(folder)]
