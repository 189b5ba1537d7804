"""The metadata blob made from the received bytes (C-STORE fast path) decodes to the data set pydicom's
writer stores, for every pydicom test file it applies to and for the archive's MR phantoms."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info, read_preamble

from pacs_cae.dicom.integrity import EncodedDataSet
from pacs_cae.dicom.metadata import _spliced, decode_metadata, encode_metadata
from pacs_cae.testing.factories import make_mr_series

TEST_FILES = sorted(p for p in (Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm")
                    if p.stat().st_size < 3_000_000)


def _received(raw: bytes) -> tuple[pydicom.Dataset, EncodedDataSet]:
    """The data set and its encoded bytes after the file meta, as a C-STORE delivers them."""
    ds = dcmread(io.BytesIO(raw))
    stream = io.BytesIO(raw)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    syntax = ds.file_meta.TransferSyntaxUID
    return ds, EncodedDataSet(raw[stream.tell():], syntax.is_implicit_VR, syntax.is_little_endian)


def _phantoms() -> list[bytes]:
    out = []
    for ds in make_mr_series(2, 64, 64, 12, patient_id="SPLICE", patient_name="Spl^Ice"):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def test_spliced_metadata_equals_the_written_one() -> None:
    spliced = 0
    for raw in [*_phantoms(), *(p.read_bytes() for p in TEST_FILES)]:
        try:
            ds, encoded = _received(raw)
            reference = decode_metadata(encode_metadata(ds))
        except Exception:  # noqa: BLE001, S112 - files the archive's writer refuses are not this test's subject
            continue
        if _spliced(ds, encoded) is None:
            continue
        spliced += 1
        fast = decode_metadata(encode_metadata(ds, encoded=encoded))
        assert fast.dataset == reference.dataset
        assert fast.dataset.file_meta == reference.dataset.file_meta
        assert (fast.pixel_vr, fast.transfer_syntax) == (reference.pixel_vr, reference.transfer_syntax)
    assert spliced >= 10  # the phantoms and the plain little-endian test files


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"])
def test_big_endian_and_encapsulated_use_the_writer(syntax: str) -> None:
    ds, encoded = _received(_phantoms()[0])
    ds.file_meta.TransferSyntaxUID = syntax
    assert _spliced(ds, encoded) is None
