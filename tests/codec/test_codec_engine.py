"""Codec: slices of all kinds round-trip in shape and dtype; errors are clear; CPU is deterministic."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from codec_helpers import MODELS_DIR, TEST_MODEL, Phantom  # tests/codec is on sys.path under pytest

from pacs_cae.codec import (
    MODES,
    Codec,
    CodecError,
    CorruptBlobError,
    ModelMismatchError,
    UnknownModelError,
    WeightsIntegrityError,
    available_models,
    default_models_dir,
    load_codec,
    read_header,
)
from pacs_cae.codec.weights import ModelCard, sha256_file


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [("uint8", 8), ("int8", 8), ("uint16", 12), ("int16", 12), ("uint16", 16), ("int16", 16)],
)
def test_bit_depths_round_trip_in_shape_dtype_and_range(
    codec: Codec, make_phantom: Phantom, dtype: str, bits: int
) -> None:
    pixels = make_phantom(40, 56, dtype, bits)
    (blob,) = codec.encode([pixels], bits_stored=bits)
    header = read_header(blob)
    assert (header.rows, header.columns, header.dtype, header.bits_stored) == (40, 56, dtype, bits)
    assert header.pixel_representation == (1 if dtype.startswith("int") else 0)
    assert (header.value_min, header.value_max) == (int(pixels.min()), int(pixels.max()))
    assert (header.model_id, header.weights_sha256) == (codec.model_id, codec.weights_sha256)
    (out,) = codec.decode([blob])
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    # Decoded values stay inside the slice's own value range (sigmoid output in [0, 1]).
    assert pixels.min() <= out.min() and out.max() <= pixels.max()


@pytest.mark.parametrize("shape", [(256, 256), (484, 484), (33, 1), (512, 200)])
def test_non_512_sizes_round_trip(codec: Codec, make_phantom: Phantom, shape: tuple[int, int]) -> None:
    pixels = make_phantom(*shape, "uint16", 12)
    (blob,) = codec.encode([pixels], bits_stored=12)
    latent = read_header(blob).latent_shape
    assert latent == (512, -(-shape[0] // 32), -(-shape[1] // 32))
    (out,) = codec.decode([blob])
    assert out.shape == shape and out.dtype == np.uint16


def test_mixed_batches_come_back_in_order(codec: Codec, make_phantom: Phantom) -> None:
    slices = [make_phantom(64, 64, "uint16", 12, seed=0), make_phantom(32, 96, "int16", 16, seed=1),
              make_phantom(64, 64, "uint8", 8, seed=2)]
    blobs = codec.encode(slices, bits_stored=[12, None, 8])
    assert [read_header(b).bits_stored for b in blobs] == [12, 16, 8]
    assert [(o.shape, o.dtype) for o in codec.decode(blobs)] == [(s.shape, s.dtype) for s in slices]
    assert codec.encode([]) == [] and codec.decode([]) == []


def test_cpu_encode_and_decode_are_deterministic(codec: Codec, make_phantom: Phantom) -> None:
    slices = [make_phantom(64, 64, "int16", 12, seed=s) for s in range(3)]
    first, second = codec.encode(slices, bits_stored=12), codec.encode(slices, bits_stored=12)
    assert first == second
    for a, b in zip(codec.decode(first), codec.decode(second)):
        np.testing.assert_array_equal(a, b)


def test_concurrent_callers_get_the_same_bytes(codec: Codec, make_phantom: Phantom) -> None:
    slices = [make_phantom(64, 64, "uint16", 12, seed=s) for s in range(4)]
    expected = [codec.encode([s], bits_stored=12)[0] for s in slices]
    got: dict[int, bytes] = {}

    def work(i: int) -> None:
        got[i] = codec.encode([slices[i]], bits_stored=12)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(4)] == expected


def test_blob_from_other_weights_is_refused_naming_the_model(codec: Codec, other_models_dir: Path,
                                                             make_phantom: Phantom) -> None:
    impostor = load_codec(TEST_MODEL, device="cpu", models_dir=other_models_dir)  # same id, other weights
    (blob,) = codec.encode([make_phantom(32, 32)], bits_stored=12)
    with pytest.raises(ModelMismatchError, match=TEST_MODEL) as info:
        impostor.decode([blob])
    assert info.value.blob_sha256 == codec.weights_sha256
    other = load_codec("other", device="cpu", models_dir=other_models_dir)
    with pytest.raises(ModelMismatchError, match="other"):
        other.decode([blob])


def test_corrupted_and_truncated_blobs_are_clear_errors(codec: Codec, make_phantom: Phantom) -> None:
    (blob,) = codec.encode([make_phantom(32, 32)], bits_stored=12)
    with pytest.raises(CorruptBlobError):
        codec.decode([blob[: len(blob) // 2]])
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF
    with pytest.raises(CorruptBlobError, match="checksum"):
        codec.decode([bytes(damaged)])
    with pytest.raises(CodecError):
        codec.decode([b""])


def test_unknown_model_names_the_id_and_directory(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        load_codec("no-such-model", device="cpu", models_dir=tmp_path)
    assert "no-such-model" in str(info.value) and str(tmp_path / "no-such-model") in str(info.value)
    with pytest.raises(CodecError, match="invalid model id"):
        load_codec("bad id!", device="cpu", models_dir=tmp_path)
    # A string with a path separator is an explicit model directory, never joined to models_dir.
    with pytest.raises(UnknownModelError, match="escape"):
        load_codec("../escape", device="cpu", models_dir=tmp_path)


def test_weights_are_checked_against_the_card(tmp_path: Path) -> None:
    target = tmp_path / TEST_MODEL
    shutil.copytree(MODELS_DIR / TEST_MODEL, target)
    card = ModelCard.from_json((target / "card.json").read_text())
    assert card.trained is False and card.architecture == "cae-paper"
    assert card.sha256 == sha256_file(target / "model.safetensors")
    card.sha256 = "0" * 64
    (target / "card.json").write_text(card.to_json())
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        load_codec(TEST_MODEL, device="cpu", models_dir=tmp_path)


def test_models_dir_default_env_and_explicit_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PACS_CAE_MODELS_DIR", raising=False)
    assert default_models_dir() == MODELS_DIR
    assert TEST_MODEL in available_models()
    monkeypatch.setenv("PACS_CAE_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path
    with pytest.raises(UnknownModelError):
        load_codec(TEST_MODEL, device="cpu")
    by_path = load_codec(MODELS_DIR / TEST_MODEL, device="cpu")
    assert by_path.model_id == TEST_MODEL


def test_model_submodules_are_reachable(codec: Codec) -> None:
    assert isinstance(codec.model.encoder, torch.nn.Module)
    assert isinstance(codec.model.decoder, torch.nn.Module)
    assert codec.device == torch.device("cpu") and codec.mode in MODES  # "auto" resolves to a concrete mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_forcing_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(CodecError, match="CUDA"):
        load_codec(TEST_MODEL, device="cuda", models_dir=MODELS_DIR)


def test_modes_agree_with_the_float32_reference(codec: Codec, make_phantom: Phantom) -> None:
    x = torch.from_numpy(make_phantom(64, 64, "uint16", 16).astype(np.float32) / 65535)[None, None]
    net = codec.model
    ref: dict[str, torch.Tensor] = {}
    for mode, tol in [("fp32", 0.0), ("channels_last", 1e-5), ("fp64", 1e-5), ("bf16", 3e-2)]:
        other = Codec(type(net)(), model_id=codec.model_id, weights_sha256=codec.weights_sha256, device="cpu",
                      mode=mode)
        other.model.load_state_dict(net.state_dict())
        z = other._run(other.model.encoder, x)
        y = other._run(other.model.decoder, z)
        assert z.dtype == y.dtype == torch.float32
        ref = ref or {"z": z, "y": y}
        scale = float(ref["z"].abs().max())
        assert float((z - ref["z"]).abs().max()) <= tol * scale, mode
        assert float((y - ref["y"]).abs().max()) <= tol, mode
    with pytest.raises(ValueError):
        Codec(type(net)(), model_id="x", weights_sha256="0" * 64, mode="fp8")  # type: ignore[arg-type]


def test_auto_mode_follows_the_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    from pacs_cae.codec import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert engine.resolve_mode("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert engine.resolve_mode("auto", torch.device("cpu")) == "channels_last"
    assert engine.resolve_mode("auto", torch.device("cuda")) == "channels_last"
    assert engine.resolve_mode("fp32", torch.device("cpu")) == "fp32"


def test_device_specs() -> None:
    from pacs_cae.codec import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "meta", "gpu0"):
        with pytest.raises(CodecError):
            resolve_device(bad)
