"""The integer scale network of residual model 3: exact integer arithmetic, and blobs that use it round-trip."""

from __future__ import annotations

import numpy as np
import pytest
from codec_helpers import MODELS_DIR, RD_MODEL, phantom

from pacs_cae.codec import CorruptBlobError, read_header
from pacs_cae.codec.container import RESIDUAL_LEARNED
from pacs_cae.codec.rd import scale_net
from pacs_cae.codec.rd.codec import rd_codec_from_tensors
from pacs_cae.codec.weights import load_checked
from pacs_cae.train.mr_realism import realistic_slice


def _random_net(seed: int, big: bool = False) -> scale_net.IntegerScaleNet:
    rng = np.random.default_rng(seed)
    h, n = scale_net.HIDDEN, scale_net.INPUTS
    if big:  # the largest weights a weights file may hold: the float64 sums must still be exact
        top = scale_net.WEIGHT_MAX
        return scale_net.IntegerScaleNet(rng.integers(-top, top + 1, (h, n)), rng.integers(-top, top, h),
                                         rng.integers(-top, top + 1, (h, h)), rng.integers(-top, top, h),
                                         rng.integers(-top, top + 1, (1, h)), rng.integers(-top, top, 1))
    layers = [(rng.normal(0, 0.3, (h, n)), rng.normal(0, 0.3, h)), (rng.normal(0, 0.3, (h, h)), rng.normal(0, 1, h)),
              (rng.normal(0, 0.3, (1, h)), np.array([8.0]))]
    return scale_net.IntegerScaleNet.from_float(layers)


def _exact_int(net: scale_net.IntegerScaleNet, x: np.ndarray) -> np.ndarray:
    """The same network in Python integers (no float at all)."""
    a, b = scale_net.WEIGHT_BITS, scale_net.ACT_BITS
    h = np.clip((x.astype(object) @ net.w1.T.astype(object) + net.b1.astype(object)) // (1 << (a - b)), 0,
                scale_net.ACT_MAX)
    h = np.clip((h @ net.w2.T.astype(object) + net.b2.astype(object)) // (1 << a), 0, scale_net.ACT_MAX)
    out = h @ net.w3.T.astype(object) + net.b3.astype(object)
    return np.clip((out[:, 0] + (1 << (a + b - 1))) // (1 << (a + b)), 0, scale_net.CLASSES - 1).astype(np.int64)


@pytest.mark.parametrize("big", [False, True])
def test_float64_evaluation_equals_integer_arithmetic_in_any_order(big: bool) -> None:
    net = _random_net(1, big)
    rng = np.random.default_rng(2)
    x = rng.integers(0, int(scale_net.EDGES.size) + 1, (3000, scale_net.INPUTS))
    want = _exact_int(net, x)
    np.testing.assert_array_equal(net(x), want)
    order = rng.permutation(scale_net.INPUTS)  # another summation order of the first layer
    permuted = scale_net.IntegerScaleNet(net.w1[:, order], net.b1, net.w2, net.b2, net.w3, net.b3)
    np.testing.assert_array_equal(permuted(x[:, order]), want)


def test_blobs_of_a_model_with_a_scale_net_round_trip_within_the_bound() -> None:
    tensors, card = load_checked(RD_MODEL, MODELS_DIR)
    net = _random_net(3)
    codec = rd_codec_from_tensors({**tensors, **net.tensors()}, card, device="cpu")
    assert codec.scale_net is not None
    base = phantom(96, 112, "uint16", 12, 4).astype(np.float32)
    original = realistic_slice(base, np.random.default_rng(4)).astype(np.uint16)
    for delta in (0, 2):
        blob = codec.encode([original], bits_stored=12, max_abs_error=delta)[0]
        assert read_header(blob).residual_model == RESIDUAL_LEARNED
        out = codec.decode([blob])[0]
        assert np.abs(out.astype(np.int64) - original).max() <= delta
    plain = rd_codec_from_tensors(tensors, card, device="cpu")  # same weights hash in this test, no network
    with pytest.raises(CorruptBlobError):
        plain.decode([blob])


def test_train_and_export_a_scale_net_model(tmp_path, monkeypatch) -> None:
    """rd_residual end to end on phantom data: train (short), export a new model id, load, code within bound."""
    import shutil

    from pacs_cae.codec import load_codec
    from pacs_cae.train import rd_residual

    def fake_data(count: int, per_slice: int, seed: int):
        rng = np.random.default_rng(seed)
        pairs = [rd_residual.slice_pixels(phantom(48, 64, "uint16", 12, seed + i), d, per_slice, rng)
                 for i in range(count) for d in rd_residual.DELTAS]
        return np.concatenate([x for x, _ in pairs]), np.concatenate([v for _, v in pairs])

    monkeypatch.setattr(rd_residual, "make_data", fake_data)
    summary = rd_residual.train(tmp_path / "run", slices=2, steps=20, per_slice=500, seed=0)
    assert summary["steps"] == 20 and summary["val_bits_integer"] > 0
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / RD_MODEL, models / RD_MODEL)
    rd_residual.export(tmp_path / "run", "mshp-test-net", models)
    codec = load_codec("mshp-test-net", device="cpu", models_dir=models)
    assert codec.scale_net is not None and codec.card.extra["residual_scale_net"]["steps"] == 20
    original = phantom(40, 56, "int16", 12, 9)
    blob = codec.encode([original], bits_stored=12, max_abs_error=1)[0]
    assert np.abs(codec.decode([blob])[0].astype(np.int64) - original).max() <= 1
