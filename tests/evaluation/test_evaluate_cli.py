"""``pacs-cae evaluate`` end to end on a tiny NIfTI volume and a tiny DICOM series, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.evaluation.baselines import standard_codecs


def _run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_rows(report: dict, count: int, model_id: str) -> None:
    names = [c["name"] for c in report["codecs"]]
    assert names == [f"CAE {model_id}"] + [c.name for c in standard_codecs()]
    for codec in report["codecs"]:
        rows, summary = codec["per_slice"], codec["summary"]
        assert len(rows) == summary["slices"] == count
        for row in rows:
            assert row["bpp"] == pytest.approx(row["compressed_bytes"] * 8 / (row["rows"] * row["columns"]))
            assert row["ratio_float32"] == pytest.approx(
                row["rows"] * row["columns"] * 4 / row["compressed_bytes"]
            )
            assert row["original_bytes"] == row["rows"] * row["columns"] * row["bits_allocated"] // 8
            if codec["lossless"]:
                assert row["psnr_db"] == "inf" and row["mse"] == 0 and row["max_abs_error"] == 0
            else:
                assert isinstance(row["psnr_db"], float)
        total = sum(r["compressed_bytes"] for r in rows)
        assert summary["compressed_bytes"] == total
        assert summary["bpp"] == pytest.approx(total * 8 / sum(r["rows"] * r["columns"] for r in rows))
    cae = report["codecs"][0]
    assert cae["summary"]["psnr_db"] != "inf"  # an untrained CAE is lossy
    assert report["definitions"]["PSNR"].startswith("10*log10(R^2/MSE)")


def test_evaluate_nifti_json_and_plot(
    nifti_path: Path, models_dir: Path, model_id: str, tmp_path: Path
) -> None:
    plot = tmp_path / "rd.png"
    report = _run(
        str(nifti_path),
        "--model",
        model_id,
        "--models-dir",
        str(models_dir),
        "--slices",
        "3",
        "--size",
        "64",
        "--bits",
        "12",
        "--plot",
        str(plot),
        "--device",
        "cpu",
    )
    _check_rows(report, 3, model_id)
    assert {
        (s["rows"], s["columns"], s["bits_stored"], s["bits_allocated"], s["dtype"]) for s in report["slices"]
    } == {(64, 64, 12, 16, "uint16")}
    assert report["model"]["model_id"] == model_id and report["model"]["trained"] is False
    assert "--slices 3 --size 64 --bits 12" in report["settings"]["command"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_dicom_uses_stored_pixels(dicom_dir: Path, models_dir: Path, model_id: str) -> None:
    report = _run(
        str(dicom_dir),
        "--model",
        model_id,
        "--models-dir",
        str(models_dir),
        "--slices",
        "2",
        "--device",
        "cpu",
    )
    _check_rows(report, 2, model_id)
    assert {(s["rows"], s["columns"], s["bits_stored"], s["dtype"]) for s in report["slices"]} == {
        (64, 64, 12, "int16")
    }


def test_evaluate_table_states_definitions(nifti_path: Path, models_dir: Path, model_id: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(nifti_path),
            "--model",
            model_id,
            "--models-dir",
            str(models_dir),
            "--slices",
            "1",
            "--size",
            "64",
            "--no-standard",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "R = max - min of the original slice" in result.stdout and f"CAE {model_id}" in result.stdout


def test_evaluate_unknown_model_fails_cleanly(nifti_path: Path, models_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", str(nifti_path), "--model", "nope", "--models-dir", str(models_dir)]
    )
    assert result.exit_code == 2 and "nope" in result.output


def test_reproduce_command_leaves_out_defaults_only(
    nifti_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacs_cae.codec.weights import default_models_dir
    from pacs_cae.evaluation.report import reproduce_command
    from pacs_cae.train import data

    # the default held-out volume comes from nilearn (train extra); any file shows the rule
    default = tmp_path / "held-out.nii.gz"
    default.write_bytes(nifti_path.read_bytes())
    monkeypatch.setattr(data, "default_val_paths", lambda: [default])
    held_out = [str(default)]
    portable = reproduce_command(
        held_out, model="m", slices=8, size=512, bits=12, models_dir=str(default_models_dir())
    )
    assert portable == "pacs-cae evaluate --model m --slices 8 --size 512 --bits 12"
    explicit = reproduce_command(
        [str(nifti_path)], model="m", slices=0, size=0, bits=16, models_dir=str(tmp_path)
    )
    assert (
        explicit
        == f"pacs-cae evaluate {nifti_path} --model m --models-dir {tmp_path} --slices 0 --size 0 --bits 16"
    )


def test_evaluate_study_needs_an_existing_archive(tmp_path: Path, models_dir: Path, model_id: str) -> None:
    """A read-only command: a missing SQLite archive is an error, never a new empty archive."""
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    result = CliRunner().invoke(app, ["evaluate", "--study", "1.2.3", "--database-url", url, "--model", model_id,
                                      "--models-dir", str(models_dir)])
    assert result.exit_code == 2 and not (tmp_path / "nothing.db").exists()
    expected = f"pacs-cae evaluate: no archive database at {tmp_path / 'nothing.db'} (database.url = {url})"
    assert result.stderr.strip().splitlines() == [expected]


def test_evaluate_study_unreachable_database_is_one_line(models_dir: Path, model_id: str) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    result = CliRunner().invoke(app, ["evaluate", "--study", "1.2.3", "--database-url", url, "--model", model_id,
                                      "--models-dir", str(models_dir)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pacs-cae evaluate: cannot read the archive:")
