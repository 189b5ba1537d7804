"""Standard codecs: lossless ones are exact, lossy ones are close, all keep shape and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from pacs_cae.evaluation.baselines import standard_codecs

CODECS = standard_codecs()


def _slice(dtype: str, bits: int) -> np.ndarray:
    y, x = np.mgrid[0:48, 0:40]
    img = 0.5 + 0.4 * np.sin(x / 6) * np.cos(y / 9) + np.random.default_rng(0).normal(0, 0.01, (48, 40))
    top = (1 << bits) - 1
    values = np.clip(np.rint(img * top), 0, top)
    if np.dtype(dtype).kind == "i":
        values -= 1 << (bits - 1)
    return values.astype(dtype)


@pytest.mark.parametrize("codec", CODECS, ids=[c.name for c in CODECS])
@pytest.mark.parametrize("dtype,bits", [("uint16", 12), ("int16", 12), ("uint8", 8), ("uint16", 16)])
def test_roundtrip(codec, dtype: str, bits: int) -> None:
    pixels = _slice(dtype, bits)
    stream, decoded, enc_s, dec_s = codec.roundtrip(pixels, bits)
    assert decoded.shape == pixels.shape and decoded.dtype == pixels.dtype
    assert isinstance(stream, bytes) and 0 < len(stream) and enc_s >= 0 and dec_s >= 0
    err = np.abs(decoded.astype(np.int64) - pixels.astype(np.int64))
    if codec.lossless:
        assert err.max() == 0
    else:
        assert err.mean() < 0.05 * (int(pixels.max()) - int(pixels.min()))


def test_the_paper_table5_families_are_all_there() -> None:
    families = {c.family for c in CODECS}
    assert {"JPEG", "JPEG 2000", "JPEG 2000 lossless", "JPEG-LS lossless", "JPEG-XL lossless"} <= families
    assert len({c.name for c in CODECS}) == len(CODECS)
