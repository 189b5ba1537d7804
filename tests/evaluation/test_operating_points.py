"""Every operating point of a multi-point learned codec is evaluated, and the JSON and BD-rates follow.

The codec is a test double (tests/evaluation/fakes.py) with a known answer: JPEG 2000 at the same settings,
padded to 1.25x the bytes, so its BD-rate against JPEG 2000 is +25 %.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.evaluation.baselines import J2K_TARGET_PSNR_DB, standard_codecs
from pacs_cae.evaluation.eval_slices import EvalSlice
from pacs_cae.evaluation.evaluate import (
    LEARNED_FAMILY,
    operating_points,
    report_dict,
    run_evaluation,
)
from pacs_cae.evaluation.report import bd_rate_markdown
from tests.evaluation.fakes import PaddedJ2K


def noisy_slices(n: int = 3, size: int = 96) -> list[EvalSlice]:
    """12-bit textured 'anatomy' with scanner-like noise, unsigned 16-bit storage."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        image = 1800 + 900 * np.sin(9 * x + i) * np.cos(7 * y) + rng.normal(0, 25, (size, size))
        out.append(EvalSlice("synthetic", i, np.clip(np.rint(image), 0, 4095).astype(np.uint16), 12, 16))
    return out


def test_operating_points_of_a_codec_with_and_without_qualities() -> None:
    assert operating_points(PaddedJ2K(qualities=(3, 1, 2))) == [3, 1, 2]

    class OnePoint:
        model_id = "one"

    assert operating_points(OnePoint()) == [None]

    class Counted:  # the rate-distortion family: ``qualities`` = how many, quality 1..N
        model_id = "counted"
        qualities = 6

    assert operating_points(Counted()) == [1, 2, 3, 4, 5, 6]
    Counted.qualities = None  # the paper's Codec: a class attribute None
    assert operating_points(Counted()) == [None]
    with pytest.raises(ValueError, match="repeat"):
        operating_points(PaddedJ2K(qualities=(1, 1)))


def test_every_operating_point_and_the_known_bd_rate() -> None:
    codec = PaddedJ2K(1.25)
    j2k = [c for c in standard_codecs() if c.family == "JPEG 2000"]
    results = run_evaluation(noisy_slices(), codec, standard=j2k)
    learned = [r for r in results if r.family == LEARNED_FAMILY]
    assert [r.quality for r in learned] == list(J2K_TARGET_PSNR_DB) == codec.calls
    for mine, theirs in zip(learned, [r for r in results if r.family == "JPEG 2000"], strict=True):
        assert mine.summary()["psnr_db"] == theirs.summary()["psnr_db"]  # same distortion, 1.25x the bits
        assert mine.summary()["bpp"] == pytest.approx(1.25 * theirs.summary()["bpp"], rel=0.01)
    report = report_dict(results, noisy_slices(), model={"model_id": codec.model_id}, settings={})
    (entry, best) = report["bd_rate"]["against"]
    assert entry["reference"] == "JPEG 2000" and entry["bd_rate_percent"] == pytest.approx(25.0, abs=0.5)
    assert best["reference"] == "best of JPEG 2000" and best["bd_rate_percent"] == entry["bd_rate_percent"]
    row = next(line for line in bd_rate_markdown(report["bd_rate"]).splitlines() if line.startswith("| JPEG 2000 |"))
    assert float(row.split("|")[2].strip().rstrip(" %")) == pytest.approx(25.0, abs=0.5)


def test_a_subset_of_qualities_and_an_unknown_one() -> None:
    codec = PaddedJ2K()
    results = run_evaluation(noisy_slices(1), codec, standard=[], qualities=[60, 40])
    assert [r.name for r in results] == ["padded-j2k q40", "padded-j2k q60"]
    with pytest.raises(ValueError, match="no quality \\[41\\]"):
        run_evaluation(noisy_slices(1), codec, standard=[], qualities=[41])


@pytest.fixture
def fake_codec(monkeypatch: pytest.MonkeyPatch) -> PaddedJ2K:
    """``pacs-cae evaluate --model padded-j2k`` loads the test double."""
    import pacs_cae.codec

    codec = PaddedJ2K(1.25)
    monkeypatch.setattr(pacs_cae.codec, "load_codec", lambda model, **kw: codec)
    return codec


def test_cli_json_shape_one_entry_per_operating_point(fake_codec: PaddedJ2K, dicom_dir) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(dicom_dir), "--model", "padded-j2k", "--json",
                                      "--slices", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    codecs = report["codecs"]
    assert [c["name"] for c in codecs] == [f"padded-j2k q{q}" for q in J2K_TARGET_PSNR_DB] + [
        c.name for c in standard_codecs()
    ]
    for c in codecs:
        assert set(c) >= {"name", "family", "lossless", "quality", "summary", "per_slice"}
        assert isinstance(c["lossless"], bool)
        assert {"psnr_db", "bpp", "max_abs_error"} <= set(c["summary"])
    assert {c["family"] for c in codecs} >= {"learned", "JPEG 2000", "JPEG-XL", "AVIF", "JPEG-LS lossless",
                                             "JPEG 2000 lossless", "JPEG-XL lossless"}
    assert [c["quality"] for c in codecs[: len(J2K_TARGET_PSNR_DB)]] == list(J2K_TARGET_PSNR_DB)
    assert report["model"]["qualities"] == list(J2K_TARGET_PSNR_DB)
    bd = {e["reference"]: e for e in report["bd_rate"]["against"]}
    assert set(bd) == {"JPEG", "JPEG 2000", "JPEG-LS near-lossless", "JPEG-XL", "AVIF",
                       "best of JPEG 2000, JPEG-XL, AVIF"}
    assert bd["JPEG 2000"]["bd_rate_percent"] == pytest.approx(25.0, abs=1.0)
    assert [c["name"] for c in codecs if c["family"] == "JPEG-LS near-lossless"] == [
        f"JPEG-LS near {n}" for n in (1, 2, 4, 8)]  # the NEAR values the learned bounds are compared at
    # the best of three is at least as good as JPEG 2000 alone, so the learned codec's BD-rate can only rise
    assert bd["best of JPEG 2000, JPEG-XL, AVIF"]["bd_rate_percent"] >= bd["JPEG 2000"]["bd_rate_percent"] - 1e-9


def test_cli_quality_filter_and_plot(fake_codec: PaddedJ2K, dicom_dir, tmp_path) -> None:
    plot = tmp_path / "rd.png"
    result = CliRunner().invoke(app, ["evaluate", str(dicom_dir), "--model", "padded-j2k", "--no-standard",
                                      "-q", "50", "-q", "70", "--plot", str(plot), "--slices", "2"])
    assert result.exit_code == 0, result.output
    assert "padded-j2k q50" in result.stdout and "padded-j2k q70" in result.stdout
    assert "padded-j2k q60" not in result.stdout
    assert "--quality 50 --quality 70" in result.stdout  # the reproduce line
    assert plot.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["-q", "41"], "padded-j2k has no quality [41]"),
        (["--bd-range", "65-45"], "--bd-range wants LOW:HIGH"),
        (["--bd-range", "65:45"], "HIGH must be above LOW"),
        (["--real-mr"], "give SOURCES, --study or --real-mr, one of them"),
    ],
)
def test_cli_user_errors_are_one_line(fake_codec: PaddedJ2K, dicom_dir, args, message) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(dicom_dir), "--model", "padded-j2k", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
