"""Pinned bitstreams (as CompressAI's hash files): an accidental change to the format or the model fails here.

The input is pure integer arithmetic (no RNG streams that could change between library versions) and the
codec runs in ``fp64`` mode, whose results do not depend on which convolution kernels a CPU picks, so the
hashes hold on any machine. An *intended* change must bump ``CONTAINER_VERSION`` or ship a new model id;
then regenerate with ``python tests/codec/test_codec_pinned.py --update``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from pacs_cae.codec import load_codec
from pacs_cae.codec.container import BlobHeader, pack_blob

PINNED = Path(__file__).with_name("pinned.json")
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MODEL = "cae-paper-init"


def pinned_input() -> np.ndarray:
    """A 70x90 12-bit unsigned slice (pads to 96x96) made by integer arithmetic only."""
    y, x = np.mgrid[0:70, 0:90].astype(np.int64)
    return ((x * x + 3 * y * y + 7 * x * y) % 4096).astype(np.uint16)


def format_only_blob() -> bytes:
    """A container with fixed fields and payload: pins the byte layout independently of any network."""
    header = BlobHeader(
        model_id="pin", weights_sha256="01" * 32, latent_shape=(512, 3, 3), latent_min=-0.5, latent_max=0.75,
        rows=70, columns=90, pad_bottom=26, pad_right=6, dtype="uint16", pixel_representation=0,
        bits_stored=12, value_min=0, value_max=4095, brotli_quality=5,
    )
    return pack_blob(header, b"pinned payload")


def compute() -> dict[str, str]:
    codec = load_codec(MODEL, device="cpu", models_dir=MODELS_DIR, mode="fp64")
    (blob,) = codec.encode([pinned_input()], bits_stored=12)
    (decoded,) = codec.decode([blob])
    return {
        "model_id": MODEL,
        "weights_sha256": codec.weights_sha256,
        "mode": "fp64",
        "blob_sha256": hashlib.sha256(blob).hexdigest(),
        "decoded_sha256": hashlib.sha256(decoded.astype("<u2").tobytes()).hexdigest(),
        "format_blob_sha256": hashlib.sha256(format_only_blob()).hexdigest(),
    }


def test_format_only_blob_is_pinned() -> None:
    expected = json.loads(PINNED.read_text())
    assert hashlib.sha256(format_only_blob()).hexdigest() == expected["format_blob_sha256"]


def test_shipped_checkpoint_gives_the_pinned_bitstream() -> None:
    expected = json.loads(PINNED.read_text())
    expected.pop("note", None)
    assert compute() == expected


if __name__ == "__main__" and "--update" in sys.argv:
    PINNED.write_text(json.dumps({**compute(), "note": __doc__.split("\n")[0]}, indent=2) + "\n")
    print(PINNED.read_text())
