"""Transfer syntax choice and conversion on retrieve (pacs_cae.dicom.transcode) and its C-FIND/rebuild echoes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from pacs_cae.archive.errors import ArchiveError
from pacs_cae.archive.retrieve import STATUS_NO_SYNTAX, for_peer
from pacs_cae.dicom.metadata import decode_metadata, encode_metadata
from pacs_cae.dicom.policy import CODEC_INPUT_SYNTAXES, missing_decoders
from pacs_cae.dicom.rebuild import LOSSY_METHOD, LossySource, delivered_lossy_attributes, rebuild_lossy
from pacs_cae.dicom.transcode import aligned_lossy_history, choose_syntax, to_little_endian, transcode
from pacs_cae.net.ae import storage_contexts_for
from pacs_cae.testing.factories import make_mr_series, make_rgb, make_sr
from tests.archive.helpers import part10, reread

MR = "1.2.840.10008.5.1.4.1.1.4"


def _mr():
    return make_mr_series(1, 64, 64, 12)[0]


@pytest.mark.parametrize(("stored", "accepted", "pixels", "expected"), [
    (RLELossless, [ExplicitVRLittleEndian, RLELossless], True, RLELossless),  # as stored, no decode
    (RLELossless, [ImplicitVRLittleEndian], True, ImplicitVRLittleEndian),
    (JPEGBaseline8Bit, [JPEG2000Lossless, ExplicitVRLittleEndian], True, ExplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [JPEGLSLossless], True, JPEGLSLossless),  # encoded on request
    (JPEGBaseline8Bit, [JPEG2000], True, None),  # never a lossy encoding
    (ImplicitVRLittleEndian, [DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian], True, ImplicitVRLittleEndian),
    (ImplicitVRLittleEndian, [RLELossless], False, RLELossless),  # no pixels: any LE syntax encodes it
    (ExplicitVRLittleEndian, [ExplicitVRBigEndian], True, None),
])
def test_choose_syntax(stored, accepted, pixels, expected) -> None:
    assert choose_syntax(stored, accepted, pixels) == expected


def test_codec_input_syntaxes_all_decodable_on_a_base_install() -> None:
    """The policy's fixed list is decodable with the required dependencies alone (no Pillow, no GDCM)."""
    assert missing_decoders() == []
    assert RLELossless in CODEC_INPUT_SYNTAXES and ExplicitVRBigEndian not in CODEC_INPUT_SYNTAXES


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm", "rtdose_expb.dcm"])
def test_big_endian_normalised_with_values_unchanged(name: str) -> None:
    from tests.e2e.syntax_corpus import pydicom_test_files

    path = pydicom_test_files() / name  # bundled with pydicom
    original = dcmread(path)
    big = dcmread(path)
    assert to_little_endian(big)
    back = reread(big)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(back.pixel_array, original.pixel_array)
    for elem in original:
        if elem.tag != 0x7FE00010 and elem.tag.element != 0:  # group lengths are not written (retired)
            assert back[elem.tag].value == elem.value, elem.keyword
    assert not to_little_endian(back)


@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless,
                                    JPEG2000Lossless, RLELossless])
def test_transcode_keeps_pixels_and_uid(target) -> None:
    ds = make_rgb()
    expected, uid = ds.pixel_array.copy(), str(ds.SOPInstanceUID)
    ds.compress(RLELossless, generate_instance_uid=False)
    stored = decode_metadata(encode_metadata(reread(ds)))
    from pacs_cae.dicom.metadata import restore_pixel_data

    out = transcode(restore_pixel_data(stored, ds.PixelData), target)
    back = dcmread(io.BytesIO(part10(out)))
    assert back.file_meta.TransferSyntaxUID == target
    assert str(back.SOPInstanceUID) == uid
    assert np.array_equal(back.pixel_array, expected)


def test_for_peer_without_a_fitting_syntax_is_an_archive_error() -> None:
    ds = reread(_mr())
    with pytest.raises(ArchiveError) as info:
        for_peer(ds, [JPEGBaseline8Bit])
    assert info.value.status == STATUS_NO_SYNTAX


def test_decoding_a_lossy_syntax_declares_the_loss() -> None:
    """A JPEG 2000 (lossy syntax) instance without Lossy Image Compression gets it when decoded."""
    ds = _mr()
    ds.compress(JPEG2000, j2k_cr=[20], generate_instance_uid=False)
    codestream = len(ds.PixelData)
    out = transcode(reread(ds), ExplicitVRLittleEndian)
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_15444_1"
    assert float(out.LossyImageCompressionRatio) == pytest.approx(64 * 64 * 16 / (8 * codestream), rel=1e-2)


def test_ratio_and_method_have_the_same_count_for_an_already_lossy_j2k() -> None:
    """The issue's `18\\7.32` vs `PACS_CAE`: a received ratio without a method gets ISO_15444_1."""
    ds = _mr()
    pixels = ds.pixel_array
    ds.compress(JPEG2000, j2k_cr=[18], generate_instance_uid=False)
    ds.LossyImageCompression, ds.LossyImageCompressionRatio = "01", "18"
    stored = decode_metadata(encode_metadata(reread(ds)))
    source = LossySource("cae-paper", 800, received_syntax=str(JPEG2000), received_pixel_bytes=len(ds.PixelData))
    out = reread(rebuild_lossy(stored, pixels, source))
    assert list(out.LossyImageCompressionMethod) == ["ISO_15444_1", LOSSY_METHOD]
    assert len(out.LossyImageCompressionRatio) == 2 and out.LossyImageCompressionRatio[0] == 18
    # C-FIND answers the same values without decoding anything
    found = delivered_lossy_attributes(decode_metadata(encode_metadata(reread(ds))).dataset, str(JPEG2000),
                                       len(ds.PixelData), source)
    assert list(found.LossyImageCompressionMethod) == list(out.LossyImageCompressionMethod)
    assert [str(v) for v in found.LossyImageCompressionRatio] == [str(v) for v in out.LossyImageCompressionRatio]
    assert list(found.ImageType) == list(out.ImageType)
    assert aligned_lossy_history(out, str(ExplicitVRLittleEndian))[1] == ["ISO_15444_1", LOSSY_METHOD]


def test_sr_without_pixels_has_no_lossy_attributes() -> None:
    found = delivered_lossy_attributes(make_sr(), str(ExplicitVRLittleEndian), 0, None)
    assert "LossyImageCompression" not in found


def test_move_proposes_stored_and_uncompressed_per_sop_class() -> None:
    contexts = storage_contexts_for([(MR, str(RLELossless)), (MR, str(ExplicitVRLittleEndian)),
                                     (MR, str(ImplicitVRLittleEndian)), (MR, str(RLELossless))])
    proposed = [(cx.abstract_syntax, list(cx.transfer_syntax)) for cx in contexts]
    assert proposed == [(MR, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]), (MR, [RLELossless]),
                        (MR, [ImplicitVRLittleEndian])]


def test_c_get_scu_preference_moves_only_syntaxes_the_archive_can_always_produce() -> None:
    """An SCU taking the SCP role that lists RLE first gets RLE; one that lists JPEG baseline first does not."""
    from types import SimpleNamespace

    from pynetdicom.presentation import build_context

    from pacs_cae.dicom.transcode import ACCEPTED_TRANSFER_SYNTAXES
    from pacs_cae.net.ae import _reorder_for_retrieve

    ct = "1.2.840.10008.5.1.4.1.1.2"
    requested = [build_context(MR, [RLELossless, ExplicitVRLittleEndian]),
                 build_context(ct, [JPEGBaseline8Bit, ExplicitVRLittleEndian])]
    role = SimpleNamespace(scp_role=True)
    requestor = SimpleNamespace(role_selection={MR: role, ct: role},
                                primitive=SimpleNamespace(presentation_context_definition_list=requested))
    acceptor = SimpleNamespace(supported_contexts=[build_context(MR, ACCEPTED_TRANSFER_SYNTAXES),
                                                   build_context(ct, ACCEPTED_TRANSFER_SYNTAXES)])
    _reorder_for_retrieve(SimpleNamespace(requestor=requestor, acceptor=acceptor))
    mr, ct_cx = acceptor.supported_contexts
    assert mr.transfer_syntax[0] == RLELossless
    assert ct_cx.transfer_syntax[0] == ExplicitVRLittleEndian  # uncompressed still wins over lossy
    assert sorted(mr.transfer_syntax) == sorted(ACCEPTED_TRANSFER_SYNTAXES)
