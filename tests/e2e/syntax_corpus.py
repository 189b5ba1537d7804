"""pydicom's own test files, one study per run, in every transfer syntax pydicom ships.

The files are real DICOM objects no one here wrote. Each is rewritten (with pydicom, in its own transfer
syntax) only to give it one test patient and study, a series per transfer syntax and a fresh SOP Instance
UID, so files that share UIDs upstream (MR_small in six syntaxes) can all be stored side by side.
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from pacs_cae.dicom.transcode import decoding_plugin

PATIENT_ID = "PCAE-SYNTAX"

#: The representative set the default run stores: every transfer syntax pydicom ships, multi-frame,
#: colour, RT and SR objects (`-m syntax_sweep` stores every usable file instead).
REPRESENTATIVE = (
    "MR_small_implicit.dcm",          # Implicit VR LE, MR (codec candidate)
    "MR_small.dcm",                   # Explicit VR LE, MR
    "MR_small_bigendian.dcm",         # Explicit VR BE (normalised on storage)
    "SC_rgb_small_odd_big_endian.dcm",  # BE colour, odd size
    "image_dfl.dcm",                  # Deflated Explicit VR LE
    "MR_small_RLE.dcm",               # RLE, MR
    "SC_rgb_rle_2frame.dcm",          # RLE, colour, multi-frame
    "SC_rgb_jpeg_dcmtk.dcm",          # JPEG baseline, colour (YBR_FULL_422)
    "JPGExtended.dcm",                # JPEG extended, 12 bit
    "SC_rgb_jpeg_gdcm.dcm",           # JPEG lossless SV1, colour
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless, MR
    "JPEGLSNearLossless_16.dcm",      # JPEG-LS near-lossless
    "MR_small_jp2klossless.dcm",      # JPEG 2000 lossless, MR
    "JPEG2000.dcm",                   # JPEG 2000 (lossy)
    "rtplan.dcm",                     # RT Plan, Implicit VR, no pixels
    "test-SR.dcm",                    # Comprehensive SR, no pixels
)


#: Samples pydicom ships damaged on purpose (DCMTK refuses to send them): not archive input.
DAMAGED = ("MR_truncated.dcm", "rtplan_truncated.dcm")


@dataclass
class CorpusFile:
    """One rewritten test file: where it is, what it holds, and its pixels as pydicom decodes them."""

    name: str
    path: Path
    dataset: Dataset
    syntax: UID
    pixels: np.ndarray | None

    @property
    def uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def stored_syntax(self) -> UID:
        """The syntax the archive keeps it in: as received, big endian normalised to Explicit VR LE."""
        return ExplicitVRLittleEndian if self.syntax == ExplicitVRBigEndian else self.syntax


def pydicom_test_files() -> Path:
    """pydicom's bundled test files in the running interpreter's site-packages."""
    import pydicom

    found = glob.glob(str(Path(pydicom.__file__).parent / "data" / "test_files"))
    assert found, "pydicom's test files are not installed"
    return Path(found[0])


def decoded(ds: Dataset) -> np.ndarray:
    """Pixels with the decoding plugin the archive uses for this syntax (lossy JPEG decoders differ)."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    if syntax.is_compressed:
        ds.pixel_array_options(decoding_plugin=decoding_plugin(syntax))
    return ds.pixel_array


def _usable(path: Path) -> Dataset | None:
    """A file the archive should take: a storable object in an accepted syntax whose pixels pydicom decodes."""
    from pacs_cae.net.ae import ACCEPTED_TRANSFER_SYNTAXES

    if path.name in DAMAGED:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
            if UID(ds.file_meta.TransferSyntaxUID) not in ACCEPTED_TRANSFER_SYNTAXES:
                return None
            if not all(k in ds for k in ("SOPClassUID", "SOPInstanceUID")):  # study/series are assigned
                return None
            if str(ds.SOPClassUID).startswith("1.2.840.10008.1.3"):  # DICOMDIR
                return None
            if "PixelData" in ds:
                decoded(ds)
            return ds
    except Exception:  # noqa: BLE001 - a damaged sample (MR_truncated, badVR): not part of the corpus
        return None


def build(out_dir: Path, *, full: bool) -> list[CorpusFile]:
    """Rewrite the chosen files into ``out_dir`` as one study of :data:`PATIENT_ID`."""
    source = pydicom_test_files()
    names = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()) if full else REPRESENTATIVE
    study = generate_uid()
    series: dict[str, str] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = []
    for index, name in enumerate(names):
        ds = _usable(source / name)
        if ds is None:
            assert full, f"{name} is not a usable sample"
            continue
        syntax = UID(ds.file_meta.TransferSyntaxUID)
        ds.PatientID, ds.PatientName = PATIENT_ID, "Syntax^Corpus"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        for keyword in ("IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series.setdefault(str(syntax), generate_uid())
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = index + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out_dir / f"{index:03d}_{Path(name).name}"
        try:
            ds.save_as(path, enforce_file_format=True)
        except (TypeError, ValueError) as exc:  # a sample pydicom reads but cannot write back (bad VRs)
            assert full, f"{name} cannot be rewritten: {exc}"
            path.unlink(missing_ok=True)
            continue
        again = dcmread(path)
        assert again.file_meta.TransferSyntaxUID == syntax, f"{name}: rewritten in another syntax"
        corpus.append(CorpusFile(name, path, again, syntax, decoded(again) if "PixelData" in again else None))
    return corpus
