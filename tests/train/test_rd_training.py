"""`pacs-cae train --arch mshp` end to end on tiny synthetic volumes: RD loss, CSV, resume, export, codec."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.codec import load_codec, read_header
from pacs_cae.codec.rd.codec import RDCodec
from pacs_cae.train.rd_loop import RDTrainConfig, schedule
from tests.train.test_training_loop import _phantom_volume


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_rd_train_resume_export_and_code(tmp_path: Path) -> None:
    train_vol = _phantom_volume(tmp_path / "train.nii.gz", 0)
    val_vol = _phantom_volume(tmp_path / "val.nii.gz", 1)
    run = tmp_path / "run"
    common = ["train", "--arch", "mshp", str(train_vol), "--val", str(val_vol), "--run-dir", str(run),
              "--size", "64", "--crop", "64", "--batch-size", "2", "--val-every", "2", "--val-slices", "1",
              "--device", "cpu"]
    _run([*common, "--steps", "2"])
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 2
    _run([*common, "--steps", "3", "--resume"])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert ckpt["step"] == 3 and ckpt["config"]["architecture"] == "mshp"
    with (run / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    val = [r for r in rows if r["val_rd_loss"]]
    assert [int(r["step"]) for r in val] == [2, 3]  # every val_every steps and at the last step
    assert all(float(r["val_q8_bpp"]) > 0 and float(r["val_q1_psnr_db"]) > 0 for r in val)

    models = tmp_path / "models"
    _run(["export-model", str(run / "best.pt"), "--model-id", "mshp-tiny", "--models-dir", str(models)])
    codec = load_codec("mshp-tiny", device="cpu", models_dir=models)
    assert isinstance(codec, RDCodec) and codec.qualities == 8 and codec.card is not None
    assert codec.card.architecture == "mshp" and codec.card.extra["steps"] in (2, 3)
    slice_ = (np.random.default_rng(0).random((70, 90)) * 4095).astype(np.uint16)
    for q in (1, 8):
        blob = codec.encode([slice_], bits_stored=12, quality=q)[0]
        assert read_header(blob).quality == q
        assert codec.decode([blob])[0].shape == slice_.shape


def test_rd_schedule_follows_time_when_the_budget_is_shorter() -> None:
    cfg = RDTrainConfig(steps=10_000, warmup_steps=10, lr=1e-3, min_lr=1e-5, max_minutes=10)
    assert schedule(cfg, 0, 0.0) == 1e-3 / 10
    assert schedule(cfg, 100, 0.0) > 0.99e-3
    assert abs(schedule(cfg, 100, 600.0) - 1e-5) < 1e-12  # time budget spent: fully decayed
    assert schedule(cfg, 100, 300.0) < schedule(cfg, 100, 60.0)
