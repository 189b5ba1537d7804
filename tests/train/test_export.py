"""``pacs-cae export-model``: a training checkpoint becomes a model directory the codec loads."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.codec import load_codec
from pacs_cae.codec.weights import initial_model
from pacs_cae.train.export import ExportError, export_checkpoint
from pacs_cae.train.loop import CSV_FIELDS, TrainConfig


@pytest.fixture
def run_dir(tmp_path: Path, nifti_path: Path) -> Path:
    """A fake finished run: best.pt like ``train.loop`` writes it, and a log.csv."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(
        run_dir=run, steps=40, crop=64, train_names=["/data/train-a.nii.gz"], val_names=[str(nifti_path)]
    )
    net = initial_model(seed=3)
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": {},
            "step": 40,
            "best_val_psnr_db": 21.5,
            "elapsed_s": 5400.0,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
            "device": "cpu",
            "torch": torch.__version__,
        },
        run / "best.pt",
    )
    with open(run / "log.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for step in range(1, 41):
            val = f"{15 + step / 10:.2f}" if step % 10 == 0 else ""
            writer.writerow(
                {
                    "step": step,
                    "elapsed_s": step * 2.0,
                    "lr": "0.001",
                    "loss": f"{0.1 / step:.6f}",
                    "train_psnr_db": f"{10 + step / 5:.2f}",
                    "val_psnr_db": val,
                    "val_psnr_quantized_db": val,
                }
            )
    return run


def test_export_model_cli_writes_a_loadable_model_with_card(
    run_dir: Path, tmp_path: Path, nifti_path: Path
) -> None:
    models = tmp_path / "models"
    result = CliRunner().invoke(
        app,
        [
            "export-model",
            str(run_dir / "best.pt"),
            "--model-id",
            "cae-test",
            "--models-dir",
            str(models),
            "--run-dir",
            str(run_dir),
            "--notes",
            "test export",
            "--evaluate-held-out",  # the checkpoint's val_names: the tiny NIfTI
            "--slices",
            "2",
            "--size",
            "64",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    out = models / "cae-test"
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "card.json",
        "README.md",
        "learning_curve.png",
        "evaluation.json",
    }
    codec = load_codec("cae-test", device="cpu", models_dir=models)  # the sha256 in the card is checked here
    state = initial_model(seed=3).state_dict()
    for name, tensor in codec.model.state_dict().items():
        assert torch.equal(tensor.cpu().float().contiguous(), state[name].contiguous()), name
    card = json.loads((out / "card.json").read_text())
    assert card["trained"] is True and card["steps"] == 40 and card["training_hours"] == 1.5
    assert card["training_data"] == ["/data/train-a.nii.gz"] and card["held_out_data"] == [str(nifti_path)]
    assert card["recipe"]["crop"] == 64 and "cosine" in card["recipe"]["schedule"]
    ev = card["evaluation"]
    assert ev["codecs"][0]["name"] == "CAE cae-test" and ev["slices"] == 2
    assert card["psnr_db"] == ev["codecs"][0]["summary"]["psnr_db"] and card["bpp"] > 0
    assert ev["command"].startswith("pacs-cae evaluate ") and "--model cae-test" in ev["command"]
    readme = (out / "README.md").read_text()
    assert card["sha256"] in readme and ev["command"] in readme and "learning_curve.png" in readme
    assert "JPEG-LS lossless" in readme and "test export" in readme
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    blob = codec.encode([np.full((64, 64), 7, dtype=np.uint16)], bits_stored=12)[0]
    assert codec.decode([blob])[0].shape == (64, 64)


def test_export_refuses_to_replace_a_model_or_to_evaluate_on_training_data(
    run_dir: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    first = export_checkpoint(run_dir / "best.pt", model_id="m1", models_dir=models)
    assert not first.card.extra["evaluation"] and (models / "m1" / "README.md").exists()
    with pytest.raises(ExportError, match="exists"):
        export_checkpoint(run_dir / "best.pt", model_id="m1", models_dir=models)
    again = export_checkpoint(run_dir / "best.pt", model_id="m1", models_dir=models, force=True)
    assert load_codec("m1", device="cpu", models_dir=models).weights_sha256 == again.card.sha256
    with pytest.raises(ExportError, match="not found"):
        export_checkpoint(
            run_dir / "best.pt", model_id="m3", models_dir=models, evaluate_on=[tmp_path / "no.nii"]
        )
    assert not (models / "m3").exists()
    with pytest.raises(ExportError, match="used in training"):
        export_checkpoint(
            run_dir / "best.pt", model_id="m2", models_dir=models, evaluate_on=[Path("/data/train-a.nii.gz")]
        )


def test_export_rejects_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    result = CliRunner().invoke(
        app, ["export-model", str(bad), "--model-id", "x", "--models-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "not a pacs-cae training checkpoint" in result.output


def test_learning_curve_log_reader_keeps_the_resumed_rows(tmp_path: Path) -> None:
    from pacs_cae.evaluation.plots import read_log

    log = tmp_path / "log.csv"
    log.write_text("step,loss,val_psnr_db\n1,0.5,\n2,0.4,12.0\n3,0.3,\n2,0.35,13.0\n3,0.25,\n")
    series = read_log(log)
    assert series["loss"] == [(1, 0.5), (2, 0.35), (3, 0.25)]
    assert series["val_psnr_db"] == [(2, 13.0)]
