"""The learned codec's guaranteed-error-bound points in ``evaluate``: measured bound, JPEG-LS beside, plot."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from pacs_cae.codec import load_codec
from pacs_cae.evaluation.baselines import standard_codecs
from pacs_cae.evaluation.eval_slices import EvalSlice
from pacs_cae.evaluation.evaluate import BOUND_FAMILY, evaluate_bound, run_evaluation
from pacs_cae.evaluation.plots import bound_points, plot_bounds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codec"))
from codec_helpers import MODELS_DIR, RD_MODEL, phantom


def _slices() -> list[EvalSlice]:
    return [EvalSlice("phantom", i, phantom(64, 80, "uint16", 12, seed=i), 12, 16) for i in range(2)]


def test_bound_points_meet_their_bound_beside_jpeg_ls(tmp_path: Path) -> None:
    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR)
    near = [c for c in standard_codecs() if c.family.startswith("JPEG-LS")]
    results = run_evaluation(_slices(), codec, standard=near, qualities=[1], bounds=[0, 2])
    bound = {r.bound: r for r in results if r.family == BOUND_FAMILY}
    assert set(bound) == {0, 2}
    assert bound[0].lossless and bound[0].summary()["max_abs_error"] == 0
    assert 0 < bound[2].summary()["max_abs_error"] <= 2
    assert bound[0].to_dict()["max_abs_error_bound"] == 0
    curves = bound_points(results)
    assert [d for d, _ in curves["JPEG-LS (NEAR)"]] == [0, 1, 2, 4, 8]
    assert [d for d, _ in curves[f"{RD_MODEL} (guaranteed bound)"]] == [0, 2]
    assert plot_bounds(results, tmp_path / "b.png").stat().st_size > 0


class _Broken:
    """Claims bounds, returns pixels off by delta + 1: evaluation must refuse to report it."""

    model_id = "broken"
    supports_max_abs_error = True

    def encode(self, slices: Sequence[np.ndarray], *, bits_stored=None, max_abs_error=None) -> list[bytes]:
        self.delta = max_abs_error
        return [s.tobytes() for s in slices]

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        return [np.frombuffer(b, np.uint16).reshape(64, 80) + (self.delta + 1) for b in blobs]


def test_a_broken_bound_is_an_error_not_a_figure() -> None:
    with pytest.raises(AssertionError, match="> 1"):
        evaluate_bound(_Broken(), _slices(), 1)  # type: ignore[arg-type]


def test_bound_table_from_the_json_report() -> None:
    from pacs_cae.evaluation.bound_table import bound_markdown, bound_rows

    codec = load_codec(RD_MODEL, device="cpu", models_dir=MODELS_DIR)
    near = [c for c in standard_codecs() if c.family.startswith("JPEG-LS")]
    results = run_evaluation(_slices(), codec, standard=near, qualities=[1], bounds=[0, 8])
    report = {"codecs": [r.to_dict() for r in results]}
    rows = bound_rows(report)
    assert [r["delta"] for r in rows] == [0, 8]
    assert rows[0]["jpegls"]["bpp"] == next(r.summary()["bpp"] for r in results if r.name == "JPEG-LS lossless")
    table = bound_markdown(report).splitlines()
    assert table[2].startswith("| 0 | ") and table[3].startswith("| 8 | ")
