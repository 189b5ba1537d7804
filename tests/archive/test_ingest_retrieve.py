"""Ingest -> retrieve round trips through the real codec, metadata and pixel blobs, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom.dsutils import decode, encode
from sqlalchemy import func, select

from pacs_cae.archive.errors import ArchiveError, CannotUnderstand, DataSetMismatch, OutOfResources
from pacs_cae.archive.floors import measure
from pacs_cae.archive.service import Archive, ArchiveCodecs
from pacs_cae.dicom.rebuild import LOSSY_METHOD
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.store.db import Database
from pacs_cae.store.schema import Instance
from pacs_cae.testing.factories import (
    make_mr_series,
    make_odd_size,
    make_presentation_state,
    make_rgb,
    make_sr,
    set_pixels,
)
from tests.archive.helpers import (
    TEST_MODEL,
    ZERO_MODEL,
    load_one,
    part10,
    refs_for,
    reread,
    store_and_compress,
)

#: Attributes a CAE-reconstructed instance is allowed (required) to change.
LOSSY_CHANGES = {
    "SOPInstanceUID", "PixelData", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "ImageType", "DerivationDescription", "DerivationCodeSequence",
    "SourceImageSequence",
}


def _from_file(ds: Dataset, transfer_syntax: str | None = None) -> Dataset:
    """``ds`` as a receiver would have it: written to Part 10 (optionally re-encoded) and read back."""
    if transfer_syntax == RLELossless:
        ds.compress(RLELossless)
    elif transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return dcmread(io.BytesIO(part10(ds)))


def test_mr_series_512_is_stored_by_the_cae_and_served_as_a_declared_lossy_copy(open_archive) -> None:
    archive: Archive = open_archive()
    series = [_from_file(ds) for ds in make_mr_series(2, 512, 512, bits_stored=12)]
    outcomes = store_and_compress(archive, *series, calling_aet="MODALITY")
    assert [o.storage for o in outcomes] == ["cae", "cae"]
    assert all(o.result == "stored" and o.codec_model_id == TEST_MODEL for o in outcomes)
    assert all(o.stored_pixel_bytes < o.original_pixel_bytes for o in outcomes)

    loaded = list(archive.load(refs_for(archive, *(ds.SOPInstanceUID for ds in series))))
    assert len(loaded) == 2
    for original, (ref, served), outcome in zip(series, loaded, outcomes):
        assert isinstance(served, Dataset), served
        served = reread(served)  # what a C-GET receiver gets
        derived = derive_lossy_uid(original.SOPInstanceUID, TEST_MODEL)
        assert served.SOPInstanceUID == derived == outcome.served_sop_instance_uid != original.SOPInstanceUID
        assert served.file_meta.MediaStorageSOPInstanceUID == derived
        assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        # the lossy step is declared
        assert served.LossyImageCompression == "01"
        assert served.LossyImageCompressionMethod == LOSSY_METHOD
        ratio = float(served.LossyImageCompressionRatio)
        assert ratio == pytest.approx(512 * 512 * 16 / (8 * outcome.stored_pixel_bytes), rel=1e-2)
        assert list(served.ImageType) == ["DERIVED", *list(original.ImageType)[1:]]
        assert TEST_MODEL in served.DerivationDescription
        code = served.DerivationCodeSequence[-1]
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
            "113040", "DCM", "Lossy Compression")
        source = served.SourceImageSequence[-1]
        assert source.ReferencedSOPClassUID == original.SOPClassUID
        assert source.ReferencedSOPInstanceUID == original.SOPInstanceUID
        purpose = source.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator) == ("121320", "DCM")
        # pixels in the original layout
        for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
            assert served[keyword].value == original[keyword].value, keyword
        pixels, expected = served.pixel_array, original.pixel_array
        assert pixels.shape == expected.shape and pixels.dtype == expected.dtype
        assert 0 <= pixels.min() and pixels.max() <= 4095
        assert math.isfinite(measure(expected, pixels)[0])
        # every other attribute untouched
        for elem in original:
            if elem.keyword not in LOSSY_CHANGES:
                assert served[elem.tag] == elem, elem.keyword
        assert {e.keyword for e in served} - {e.keyword for e in original} <= LOSSY_CHANGES


@pytest.mark.parametrize("make, transfer_syntax", [
    (lambda: make_sr(), None),
    (lambda: make_presentation_state(make_mr_series(1, 64, 64)[0]), None),
    (lambda: make_rgb(), None),
    (lambda: make_odd_size(2000, 100), None),
    (lambda: make_mr_series(1, 64, 64)[0], RLELossless),
    (lambda: make_mr_series(1, 64, 64)[0], ImplicitVRLittleEndian),
], ids=["sr", "presentation-state", "rgb", "odd-2000x100", "mr-rle-encapsulated", "mr-implicit-vr"])
def test_lossless_objects_come_back_byte_for_byte(open_archive, make, transfer_syntax) -> None:
    # MR slices in other transfer syntaxes are kept out of the codec by the modality setting
    archive: Archive = open_archive(modalities=["CT"] if transfer_syntax else ["MR"])
    original = _from_file(make(), transfer_syntax)
    (outcome,) = store_and_compress(archive, original)
    assert outcome.storage == ("none" if "PixelData" not in original else "lossless")
    assert outcome.fallback_reason is None and outcome.served_sop_instance_uid == original.SOPInstanceUID
    served = load_one(archive, original.SOPInstanceUID)
    assert served.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert served == original
    assert part10(served) == part10(original)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-vr", "explicit-vr"])
def test_network_decoded_lossless_object_is_sent_back_with_the_same_bytes(open_archive, implicit) -> None:
    """As pynetdicom hands a C-STORE data set over (decoded from the wire, file meta attached)."""
    archive: Archive = open_archive()
    wire = encode(make_rgb(), implicit, True)
    ds = decode(io.BytesIO(wire), implicit, True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    archive.store(ds, calling_aet="STORESCU", affected_sop_class=ds.SOPClassUID,
                  affected_sop_instance=ds.SOPInstanceUID)
    served = load_one(archive, ds.SOPInstanceUID)
    assert served.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
    assert encode(served, implicit, True) == wire


def test_signed_16_bit_slice_round_trips_in_its_own_range(open_archive) -> None:
    archive: Archive = open_archive()
    original = _from_file(make_mr_series(1, 128, 96, bits_stored=16, signed=True)[0])
    assert original.pixel_array.min() < 0
    assert store_and_compress(archive, original)[0].storage == "cae"
    served = reread(load_one(archive, original.SOPInstanceUID))
    assert served.PixelRepresentation == 1 and served.BitsStored == 16
    assert served.pixel_array.dtype == np.int16 and served.pixel_array.shape == (128, 96)


def test_eligible_compressed_input_is_served_uncompressed(open_archive) -> None:
    archive: Archive = open_archive()
    original = _from_file(make_mr_series(1, 64, 64)[0], RLELossless)
    assert store_and_compress(archive, original)[0].storage == "cae"
    served = reread(load_one(archive, original.SOPInstanceUID))
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert served.pixel_array.shape == (64, 64) and served.LossyImageCompression == "01"
    assert served.PatientName == original.PatientName


def test_odd_size_inside_the_policy_is_padded_and_cropped(open_archive) -> None:
    archive: Archive = open_archive()
    original = _from_file(make_odd_size(300, 300))
    assert store_and_compress(archive, original)[0].storage == "cae"
    served = reread(load_one(archive, original.SOPInstanceUID))
    assert served.pixel_array.shape == (300, 300)


def test_quality_gate_with_a_bad_model_stores_every_slice_losslessly(open_archive) -> None:
    archive: Archive = open_archive(model=ZERO_MODEL, gate=True, min_psnr_db=30.0)
    series = [_from_file(ds) for ds in make_mr_series(3, 64, 64)]
    outcomes = store_and_compress(archive, *series)
    assert [o.storage for o in outcomes] == ["lossless"] * 3
    assert all(o.fallback_reason.startswith("quality-gate: PSNR") for o in outcomes)
    with archive.database.session(readonly=True) as session:
        reasons = session.scalars(select(Instance.fallback_reason)).all()
    assert len(reasons) == 3 and all(r.startswith("quality-gate") for r in reasons)
    for original in series:
        served = load_one(archive, original.SOPInstanceUID)
        assert served == original and served.PixelData == original.PixelData


def test_quality_gate_max_abs_error_floor(open_archive) -> None:
    archive: Archive = open_archive(gate=True, min_psnr_db=None, max_abs_error=0.0)
    (outcome,) = store_and_compress(archive, _from_file(make_mr_series(1, 64, 64)[0]))
    assert outcome.storage == "lossless" and "max abs error" in outcome.fallback_reason


def test_compression_ratio_ceiling_stores_losslessly_without_a_decode(open_archive) -> None:
    # The all-zero model codes a 64x64 slice to ~75:1: beyond the default 24:1 ceiling, with the gate off.
    archive: Archive = open_archive(model=ZERO_MODEL, gate=False, max_compression_ratio=24.0)
    original = _from_file(make_mr_series(1, 64, 64)[0])
    (outcome,) = store_and_compress(archive, original)
    assert outcome.storage == "lossless"
    assert outcome.fallback_reason.startswith("quality-gate: compression ratio")
    assert "> max_compression_ratio 24:1" in outcome.fallback_reason
    served = load_one(archive, original.SOPInstanceUID)
    assert served.PixelData == original.PixelData


def test_compression_ratio_ceiling_admits_a_blob_under_it(open_archive) -> None:
    archive: Archive = open_archive(model=ZERO_MODEL, gate=False, max_compression_ratio=1000.0)
    assert store_and_compress(archive, _from_file(make_mr_series(1, 64, 64)[0]))[0].storage == "cae"


def test_quality_gate_passing_slice_is_stored_lossy_within_the_floor(open_archive) -> None:
    archive: Archive = open_archive(gate=True, min_psnr_db=-100.0, max_abs_error=4095.0)
    original = _from_file(make_mr_series(1, 64, 64)[0])
    (outcome,) = store_and_compress(archive, original)
    assert outcome.storage == "cae" and outcome.fallback_reason is None
    served = reread(load_one(archive, original.SOPInstanceUID))
    assert measure(original.pixel_array, served.pixel_array)[1] <= 4095.0


def _nearly_empty_slice() -> Dataset:
    """The top slice of a head, almost all air: JPEG-LS codes it in a few hundred bytes, below any CAE blob."""
    ds = make_mr_series(1, 512, 512)[0]
    pixels = np.zeros((512, 512), dtype=np.uint16)
    pixels[250:262, 240:256] = 3000
    set_pixels(ds, pixels, bits_stored=12, signed=False)
    return _from_file(ds)


def test_require_gain_stores_losslessly_when_the_cae_saves_nothing(open_archive) -> None:
    archive: Archive = open_archive(require_gain=True)
    original = _nearly_empty_slice()
    (outcome,) = store_and_compress(archive, original)
    assert outcome.storage == "lossless" and outcome.fallback_reason.startswith("no-gain: CAE blob")
    served = load_one(archive, original.SOPInstanceUID)
    assert served == original and "LossyImageCompression" not in served
    assert archive.stats()["fallbacks"]["by_reason"] == {"no-gain": 1}


def test_require_gain_off_keeps_the_cae_blob(open_archive) -> None:
    archive: Archive = open_archive(require_gain=False)
    assert store_and_compress(archive, _nearly_empty_slice())[0].storage == "cae"


def test_keep_uid_serves_the_original_uid(open_archive) -> None:
    archive: Archive = open_archive(lossy_uid="keep")
    original = _from_file(make_mr_series(1, 64, 64)[0])
    (outcome,) = store_and_compress(archive, original)
    assert outcome.storage == "cae" and outcome.served_sop_instance_uid == original.SOPInstanceUID
    served = load_one(archive, original.SOPInstanceUID)
    assert served.SOPInstanceUID == original.SOPInstanceUID and served.LossyImageCompression == "01"
    assert "SourceImageSequence" not in served


@pytest.mark.parametrize("policy, expected", [("replace", "replaced"), ("keep-first", "kept-first")])
def test_resent_instance_follows_the_duplicate_policy(open_archive, policy, expected) -> None:
    archive: Archive = open_archive(duplicate_policy=policy)
    first = _from_file(make_sr())
    second = _from_file(make_sr())
    second.SOPInstanceUID = first.SOPInstanceUID
    second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    second.StudyInstanceUID, second.SeriesInstanceUID = first.StudyInstanceUID, first.SeriesInstanceUID
    second.ContentSequence[0].TextValue = "second version"
    assert archive.store(first).result == "stored"
    assert archive.store(second).result == expected
    with archive.database.session(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
    served = load_one(archive, first.SOPInstanceUID)
    assert served == (second if policy == "replace" else first)


def test_missing_sop_instance_uid_cannot_be_understood(open_archive) -> None:
    archive: Archive = open_archive()
    ds = _from_file(make_sr())
    del ds.SOPInstanceUID
    with pytest.raises(CannotUnderstand) as info:
        archive.store(ds)
    assert 0xC000 <= info.value.status <= 0xCFFF


def test_missing_study_uid_cannot_be_understood(open_archive) -> None:
    archive: Archive = open_archive()
    ds = _from_file(make_sr())
    ds.StudyInstanceUID = ""
    with pytest.raises(ArchiveError) as info:
        archive.store(ds)
    assert 0xC000 <= info.value.status <= 0xCFFF


def test_sop_class_other_than_the_request_is_a_mismatch(open_archive) -> None:
    archive: Archive = open_archive()
    ds = _from_file(make_sr())
    with pytest.raises(DataSetMismatch) as info:
        archive.store(ds, affected_sop_class="1.2.840.10008.5.1.4.1.1.4")
    assert info.value.status == 0xA900
    with pytest.raises(DataSetMismatch):
        archive.store(ds, affected_sop_class=ds.SOPClassUID, affected_sop_instance="1.2.3.4")
    assert archive.store(ds, affected_sop_class=ds.SOPClassUID,
                         affected_sop_instance=ds.SOPInstanceUID).result == "stored"


def test_database_failure_is_out_of_resources(make_settings, registry, tmp_path) -> None:
    settings = make_settings()
    database = Database(f"sqlite:///{tmp_path / 'no-schema.db'}")  # never migrated: no tables
    archive = Archive(settings, database, ArchiveCodecs(registry, None))
    with pytest.raises(OutOfResources) as info:
        archive.store(_from_file(make_sr()))
    assert info.value.status == 0xA700
    database.dispose()


def test_damaged_blob_is_a_per_instance_error(open_archive) -> None:
    archive: Archive = open_archive()
    good, bad = (_from_file(ds) for ds in make_mr_series(2, 64, 64))
    assert [o.storage for o in store_and_compress(archive, good, bad)] == ["cae", "cae"]
    with archive.database.session() as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == bad.SOPInstanceUID)).one()
        row.blob.pixel_blob = row.blob.pixel_blob[:40]
    results = {ref.sop_instance_uid: result for ref, result in
                   archive.load(refs_for(archive, good.SOPInstanceUID, bad.SOPInstanceUID))}
    assert isinstance(results[good.SOPInstanceUID], Dataset)
    assert isinstance(results[bad.SOPInstanceUID], ArchiveError)


def test_without_a_codec_everything_is_lossless(make_settings, registry, database_url) -> None:
    settings = make_settings()
    database = Database(database_url)
    database.upgrade()
    archive = Archive(settings, database, ArchiveCodecs(registry, None))
    original = _from_file(make_mr_series(1, 64, 64)[0])
    assert store_and_compress(archive, original)[0].storage == "lossless"
    assert load_one(archive, original.SOPInstanceUID) == original
    database.dispose()
