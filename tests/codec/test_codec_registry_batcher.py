"""CodecRegistry decodes each blob with the model it names; BatchingCodec merges callers' requests."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from codec_helpers import TEST_MODEL, Phantom  # tests/codec is on sys.path under pytest

from pacs_cae.codec import (
    BatchingCodec,
    Codec,
    CodecError,
    CodecRegistry,
    CorruptBlobError,
    UnknownModelError,
)


def test_registry_decodes_a_mix_of_models_in_order(
    other_models_dir: Path, make_phantom: Phantom
) -> None:
    registry = CodecRegistry(models_dir=other_models_dir, device="cpu")
    a, b = registry.get(TEST_MODEL), registry.get("other")
    assert registry.get("other") is b and registry.loaded() == sorted([TEST_MODEL, "other"])
    slices = [make_phantom(32, 32, seed=s) for s in range(3)]
    blobs = [a.encode([slices[0]])[0], b.encode([slices[1]])[0], a.encode([slices[2]])[0]]
    out = registry.decode(blobs)
    expected = [a.decode([blobs[0]])[0], b.decode([blobs[1]])[0], a.decode([blobs[2]])[0]]
    for got, want in zip(out, expected):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(UnknownModelError, match="missing"):
        registry.get("missing")


def test_registry_names_a_model_it_does_not_have(
    codec: Codec, tmp_path: Path, make_phantom: Phantom
) -> None:
    (blob,) = codec.encode([make_phantom(32, 32)])
    with pytest.raises(UnknownModelError, match=TEST_MODEL):
        CodecRegistry(models_dir=tmp_path, device="cpu").decode([blob])


class _CountingCodec:
    """Wraps a Codec and records the size of each call the batcher makes."""

    def __init__(self, codec: Codec) -> None:
        self.codec, self.calls = codec, []
        self.model_id, self.weights_sha256 = codec.model_id, codec.weights_sha256

    def encode(self, slices, *, bits_stored=None):
        self.calls.append(("encode", len(slices)))
        return self.codec.encode(slices, bits_stored=bits_stored)

    def decode(self, blobs):
        self.calls.append(("decode", len(blobs)))
        return self.codec.decode(blobs)


def _in_threads(count: int, target) -> None:
    barrier = threading.Barrier(count)
    threads = [threading.Thread(target=lambda i=i: (barrier.wait(), target(i))) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_batcher_merges_concurrent_requests_and_returns_each_its_own(
    codec: Codec, make_phantom: Phantom
) -> None:
    slices = [make_phantom(32, 32, "int16", 12, seed=s) for s in range(6)]
    expected = codec.encode(slices, bits_stored=12)
    counting = _CountingCodec(codec)
    results: dict[int, list[bytes]] = {}
    with BatchingCodec(counting, max_batch=8, max_wait_ms=200) as batcher:  # type: ignore[arg-type]
        assert batcher.model_id == codec.model_id
        _in_threads(6, lambda i: results.__setitem__(i, batcher.encode([slices[i]], bits_stored=12)))
        decoded = batcher.decode(expected)
    assert [results[i][0] for i in range(6)] == expected
    encode_calls = [n for kind, n in counting.calls if kind == "encode"]
    assert sum(encode_calls) == 6 and len(encode_calls) < 6  # merged into fewer network calls
    for got, want in zip(decoded, codec.decode(expected)):
        np.testing.assert_array_equal(got, want)


def test_batcher_isolates_a_bad_request(codec: Codec, make_phantom: Phantom) -> None:
    good = codec.encode([make_phantom(32, 32, seed=s) for s in range(3)])
    outcomes: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            outcomes[i] = batcher.decode([b"garbage" if i == 1 else good[i]])
        except CodecError as exc:
            outcomes[i] = exc

    with BatchingCodec(codec, max_batch=8, max_wait_ms=200) as batcher:
        _in_threads(3, call)
    assert isinstance(outcomes[1], CorruptBlobError)
    for i in (0, 2):
        np.testing.assert_array_equal(outcomes[i][0], codec.decode([good[i]])[0])  # type: ignore[index]


def test_batcher_refuses_work_after_close(codec: Codec, make_phantom: Phantom) -> None:
    batcher = BatchingCodec(codec, max_batch=2, max_wait_ms=0)
    assert len(batcher.encode([make_phantom(32, 32, seed=s) for s in range(5)])) == 5  # larger than max_batch
    batcher.close()
    batcher.close()  # idempotent
    with pytest.raises(CodecError, match="closed"):
        batcher.encode([make_phantom(32, 32)])


def test_registry_runs_one_slice_per_forward_on_the_cpu_unless_told_otherwise(other_models_dir: Path) -> None:
    # batch 1 measured fastest on the CPU (pacs_cae.codec.device.AUTO_FORWARD_BATCH); a set size is kept
    assert CodecRegistry(models_dir=other_models_dir, device="cpu", max_batch=0).get(TEST_MODEL).max_batch == 1
    assert CodecRegistry(models_dir=other_models_dir, device="cpu", max_batch=4).get(TEST_MODEL).max_batch == 4


def test_forward_batch_per_device() -> None:
    import torch

    from pacs_cae.codec.device import forward_batch

    assert forward_batch(0, torch.device("cpu")) == 1
    assert forward_batch(0, torch.device("cuda")) == 8
    assert forward_batch(3, torch.device("cuda")) == 3
    with pytest.raises(ValueError, match="batch_size"):
        forward_batch(-1, torch.device("cpu"))
