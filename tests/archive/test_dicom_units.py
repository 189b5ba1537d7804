"""Unit tests of the DICOM-side helpers the archive uses: policy, UIDs, metadata blobs, lossy rebuild."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRBigEndian, RLELossless

from pacs_cae.config import CodecSettings
from pacs_cae.dicom.metadata import MetadataError, decode_metadata, encode_metadata, restore_pixel_data
from pacs_cae.dicom.policy import ELIGIBLE, check_eligibility
from pacs_cae.dicom.rebuild import LOSSY_METHOD, LossySource, compression_ratio, rebuild_lossy
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.testing.factories import make_mr_series, make_odd_size, make_rgb, make_sr
from tests.archive.helpers import part10, reread

SETTINGS = CodecSettings()


def _mr(**kwargs):
    return make_mr_series(1, kwargs.pop("rows", 64), kwargs.pop("cols", 64), **kwargs)[0]


# -- policy ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, cols, eligible", [
    (512, 512, True), (300, 300, True), (484, 484, True), (32, 32, True), (1024, 1024, True),
    (2000, 100, False), (16, 512, False), (512, 1100, False),
])
def test_policy_size_limits(rows, cols, eligible) -> None:
    ds = make_odd_size(rows, cols) if (rows, cols) != (512, 512) else _mr(rows=512, cols=512)
    ok, reason = check_eligibility(ds, SETTINGS)
    assert ok is eligible, reason
    assert (reason == ELIGIBLE) is eligible
    if not eligible:
        assert "Rows" in reason or "Columns" in reason


def test_policy_rejects_what_the_codec_was_not_built_for() -> None:
    assert check_eligibility(make_sr(), SETTINGS) == (False, "no Pixel Data (non-image object)")
    assert "Modality OT" in check_eligibility(make_rgb(), SETTINGS)[1]
    assert "SamplesPerPixel 3" in check_eligibility(make_rgb(), CodecSettings(modalities=["OT"]))[1]
    ct = _mr()
    ct.Modality = "CT"
    assert "Modality CT" in check_eligibility(ct, SETTINGS)[1]
    assert check_eligibility(ct, CodecSettings(modalities=["MR", "CT"]))[0]
    multi = _mr()
    multi.NumberOfFrames = 2
    assert "NumberOfFrames 2" in check_eligibility(multi, SETTINGS)[1]
    palette = _mr()
    palette.PhotometricInterpretation = "PALETTE COLOR"
    assert "PhotometricInterpretation" in check_eligibility(palette, SETTINGS)[1]
    wide = _mr()
    wide.BitsAllocated = 32
    assert "BitsAllocated 32" in check_eligibility(wide, SETTINGS)[1]
    mono1 = _mr()
    mono1.PhotometricInterpretation = "MONOCHROME1"
    assert check_eligibility(mono1, SETTINGS)[0]
    eight = _mr(bits_stored=8)
    assert eight.BitsAllocated == 8 and check_eligibility(eight, SETTINGS)[0]


def test_policy_accepts_compressed_input_pydicom_can_decode_and_keeps_big_endian_out() -> None:
    rle = _mr()
    rle.compress(RLELossless)
    assert check_eligibility(rle, SETTINGS)[0]
    big = _mr()
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    assert "big endian" in check_eligibility(big, SETTINGS)[1]


# -- derived UIDs ----------------------------------------------------------------------------------------
def test_derived_uid_is_deterministic_valid_and_model_specific() -> None:
    original = "1.2.826.0.1.3680043.8.498.77.123456789"
    uid = derive_lossy_uid(original, "cae-paper")
    assert uid == derive_lossy_uid(original, "cae-paper")
    assert uid.is_valid and len(uid) <= 64 and uid != original
    assert uid != derive_lossy_uid(original, "cae-paper-v2")
    assert uid != derive_lossy_uid(original + "0", "cae-paper")
    assert derive_lossy_uid("1.2", "3x") != derive_lossy_uid("1.23", "x")
    assert derive_lossy_uid(original, "m", root="1.2.3.") .startswith("1.2.3.")


# -- metadata blobs ----------------------------------------------------------------------------------------
def test_metadata_blob_excludes_pixel_data_and_restores_it() -> None:
    ds = reread(_mr(rows=128, cols=128))
    blob = encode_metadata(ds)
    assert len(blob) < 2000  # the pixels (32 KiB) are not in it
    stored = decode_metadata(blob)
    assert "PixelData" not in stored.dataset and stored.pixel_vr == "OW"
    restored = restore_pixel_data(stored, ds.PixelData)
    assert restored == ds and part10(restored) == part10(ds)


def test_metadata_blob_keeps_encapsulated_transfer_syntax() -> None:
    ds = _mr()
    ds.compress(RLELossless)
    ds = reread(ds)
    stored = decode_metadata(encode_metadata(ds))
    assert stored.transfer_syntax == RLELossless and stored.pixel_vr == "OB"
    restored = restore_pixel_data(stored, ds.PixelData)
    assert np.array_equal(reread(restored).pixel_array, ds.pixel_array)


def test_metadata_blob_without_file_meta_uses_the_read_encoding() -> None:
    ds = reread(make_sr())
    del ds.file_meta
    stored = decode_metadata(encode_metadata(ds))
    assert stored.pixel_vr is None and stored.dataset.ContentSequence == ds.ContentSequence


def test_damaged_metadata_blob_raises() -> None:
    blob = encode_metadata(make_sr())
    with pytest.raises(MetadataError):
        decode_metadata(blob[:-10])
    with pytest.raises(MetadataError):
        decode_metadata(b"not ours")


# -- lossy rebuild -----------------------------------------------------------------------------------------
def test_rebuild_appends_to_an_earlier_lossy_step() -> None:
    ds = _mr()
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.DerivationDescription = "JPEG at the modality"
    stored = decode_metadata(encode_metadata(ds))
    out = reread(rebuild_lossy(stored, ds.pixel_array, LossySource("cae-paper", 800)))
    assert list(out.LossyImageCompressionMethod) == ["ISO_10918_1", LOSSY_METHOD]
    assert out.LossyImageCompressionRatio[0] == 10
    assert float(out.LossyImageCompressionRatio[1]) == pytest.approx(64 * 64 * 16 / (8 * 800), rel=1e-3)
    assert out.DerivationDescription.startswith("JPEG at the modality; ")
    assert len(LOSSY_METHOD) <= 16  # CS


def test_rebuild_writes_original_layout_from_encapsulated_input() -> None:
    ds = _mr(bits_stored=12)
    pixels = ds.pixel_array
    ds.compress(RLELossless)
    stored = decode_metadata(encode_metadata(reread(ds)))
    out = rebuild_lossy(stored, pixels, LossySource("m", 1000))
    assert out.file_meta.TransferSyntaxUID == UID("1.2.840.10008.1.2.1")
    back = dcmread(io.BytesIO(part10(out)))
    assert np.array_equal(back.pixel_array, pixels)
    assert compression_ratio(back, 1000) == pytest.approx(64 * 64 * 16 / 8000)


def test_rebuild_clips_to_bits_stored_and_checks_shape() -> None:
    ds = _mr(bits_stored=12)
    stored = decode_metadata(encode_metadata(ds))
    wild = np.full((64, 64), 9000, dtype=np.uint16)
    out = reread(rebuild_lossy(stored, wild, LossySource("m", 100)))
    assert out.pixel_array.max() == 4095
    with pytest.raises(ValueError):
        rebuild_lossy(decode_metadata(encode_metadata(ds)), np.zeros((10, 10), np.uint16), LossySource("m", 1))


# -- quality gate measurement --------------------------------------------------------------------------------
def test_gate_psnr_uses_the_original_slice_range() -> None:
    from pacs_cae.archive.floors import measure, quality_gate

    original = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    decoded = original.astype(np.int64) + np.array([[10, -10], [10, -10]])
    psnr, max_err = measure(original, decoded)
    assert psnr == pytest.approx(10 * np.log10(4000**2 / 100)) and max_err == 10
    assert measure(original, original) == (float("inf"), 0.0)
    blank = np.zeros((4, 4), np.uint16)
    assert measure(blank, blank + 1)[0] == float("-inf")  # a flat slice must come back exact
    assert quality_gate(original, decoded, 30.0, None).reason is None
    assert quality_gate(original, decoded, 60.0, None).reason.startswith("quality-gate: PSNR")
    assert "max abs error 10" in quality_gate(original, decoded, None, 5).reason
