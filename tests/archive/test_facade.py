"""The Archive facade end to end without the network: find/locate speak the served UID, stats add up,
concurrent stores share the batching codec, and ``pacs-cae import``/``export`` go through the same paths."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from pacs_cae.archive.service import Archive
from pacs_cae.cli import app
from pacs_cae.dicom.uids import derive_lossy_uid
from pacs_cae.testing.factories import make_mr_series, make_rgb, make_sr
from tests.archive.helpers import TEST_MODEL, reread, store_and_compress


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_find_and_locate_use_the_uid_retrieve_delivers(open_archive) -> None:
    archive: Archive = open_archive()
    series = [reread(ds) for ds in make_mr_series(2, 64, 64)]
    sr = reread(make_sr(study_uid=series[0].StudyInstanceUID))
    store_and_compress(archive, *series, sr)
    study = series[0].StudyInstanceUID

    matches = list(archive.find("S", _identifier("IMAGE", StudyInstanceUID=study,
                                                 SeriesInstanceUID=series[0].SeriesInstanceUID,
                                                 SOPInstanceUID="")))
    derived = {derive_lossy_uid(ds.SOPInstanceUID, TEST_MODEL) for ds in series}
    assert {m.SOPInstanceUID for m in matches} == derived

    refs = archive.locate("S", _identifier("STUDY", StudyInstanceUID=study))
    assert len(refs) == 3
    delivered = {ds.SOPInstanceUID for _, ds in archive.load(refs)}
    assert delivered == derived | {sr.SOPInstanceUID}

    for uid in (series[0].SOPInstanceUID, derive_lossy_uid(series[0].SOPInstanceUID, TEST_MODEL)):
        ident = _identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series[0].SeriesInstanceUID,
                            SOPInstanceUID=uid)
        [(_ref, ds)] = list(archive.load(archive.locate("S", ident)))
        assert ds.SOPInstanceUID == derive_lossy_uid(series[0].SOPInstanceUID, TEST_MODEL)

    figures = archive.stats()
    assert (figures["patients"], figures["studies"], figures["instances"]) == (1, 1, 3)
    assert figures["original_bytes"] == sum(len(ds.PixelData) for ds in series)
    cae = [g for g in figures["by_storage"] if g["storage"] == "cae"]
    assert cae and cae[0]["model"] == TEST_MODEL and cae[0]["instances"] == 2


def test_concurrent_stores_share_the_batching_codec(open_archive) -> None:
    archive: Archive = open_archive()
    slices = [reread(ds) for ds in make_mr_series(6, 64, 64)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = list(pool.map(archive.store, slices))
    assert sorted(o.result for o in outcomes) == ["stored"] * 6
    assert all(o.storage == "lossless" and o.compression_rule == "default" for o in outcomes)
    report = archive.compress_pending()
    assert (report.jobs, report.compressed) == (1, 6)  # one series, one job, every slice
    refs = archive.locate("S", _identifier("STUDY", StudyInstanceUID=slices[0].StudyInstanceUID))
    loaded = list(archive.load(refs))
    assert len(loaded) == 6 and all(isinstance(ds, Dataset) for _, ds in loaded)


@pytest.fixture
def config_file(tmp_path: Path, models_dir: Path) -> Path:
    path = tmp_path / "pacs-cae.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n'
        f'[codec]\nmodel = "{TEST_MODEL}"\ndevice = "cpu"\nmodels_dir = "{models_dir}"\ngate = false\n'
    )
    return path


def test_import_then_export_cli(tmp_path: Path, config_file: Path) -> None:
    source = tmp_path / "in"
    (source / "mr").mkdir(parents=True)
    series = make_mr_series(2, 64, 64)
    originals: dict[str, Path] = {}
    for i, ds in enumerate(series):
        ds.save_as(source / "mr" / f"{i}.dcm", enforce_file_format=True)
    for name, ds in (("sr.dcm", make_sr(study_uid=series[0].StudyInstanceUID)), ("rgb.dcm", make_rgb())):
        ds.save_as(source / name, enforce_file_format=True)
        originals[ds.SOPInstanceUID] = source / name
    (source / "README.txt").write_text("not DICOM")

    runner = CliRunner()
    result = runner.invoke(app, ["import", str(source), "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "imported 4 of 5 files" in result.output and "lossless 3 (2 queued for compression" in result.output
    assert "skipped 1" in result.output
    drained = runner.invoke(app, ["worker", "--drain", "--now", "--config", str(config_file)])
    assert drained.exit_code == 0, drained.output
    assert "2 slice(s) stored lossy" in drained.output
    sizes = re.search(r"pixel blobs in the archive: ([\d.]+ \w+) before, ([\d.]+ \w+) after", drained.output)
    assert sizes, drained.output
    before, after = (float(v) * 1024 ** ["B", "KiB", "MiB"].index(u) for v, u in (x.split() for x in sizes.groups()))
    assert after < before  # what the drain freed, whatever its kind

    again = runner.invoke(app, ["import", str(source / "mr"), "--config", str(config_file)])
    assert again.exit_code == 0 and "2 already archived and kept" in again.output  # identical: kept first

    out = tmp_path / "out"
    result = runner.invoke(app, ["export", str(out), "--all", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 4
    by_uid = {dcmread(f).SOPInstanceUID: f for f in files}
    for uid, original in originals.items():  # lossless objects: the very same file
        assert by_uid[uid].read_bytes() == original.read_bytes()
    for ds in series:
        exported = dcmread(by_uid[derive_lossy_uid(ds.SOPInstanceUID, TEST_MODEL)])
        assert exported.LossyImageCompression == "01" and exported.pixel_array.shape == (64, 64)

    only_study = tmp_path / "study"
    result = runner.invoke(app, ["export", str(only_study), "--study", str(series[0].StudyInstanceUID),
                                 "--config", str(config_file)])
    assert result.exit_code == 0 and len(list(only_study.rglob("*.dcm"))) == 3

    nothing = runner.invoke(app, ["export", str(tmp_path / "none"), "--config", str(config_file)])
    assert nothing.exit_code == 2


def test_archive_open_migrates_sqlite_loads_the_model_and_closes(tmp_path: Path, models_dir: Path) -> None:
    from pacs_cae.codec import UnknownModelError
    from pacs_cae.config import CodecSettings, DatabaseSettings, Settings

    def settings(model: str) -> Settings:
        return Settings(database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'data' / 'archive.db'}"),
                        codec=CodecSettings(model=model, device="cpu", models_dir=str(models_dir), gate=False))

    with Archive.open(settings(TEST_MODEL)) as archive:
        assert archive.codecs.model_id == TEST_MODEL
        assert store_and_compress(archive, reread(make_mr_series(1, 64, 64)[0]))[0].storage == "cae"
    with pytest.raises(UnknownModelError):
        Archive.open(settings("no-such-model"))
    with Archive.open(settings("none")) as archive:  # lossless-only, and old CAE blobs still decode
        assert archive.codecs.encoder is None
        assert store_and_compress(archive, reread(make_mr_series(1, 64, 64)[0]))[0].storage == "lossless"
        refs = archive.locate("P", _identifier("PATIENT", PatientID="PCAE0001"))
        loaded = [ds for _, ds in archive.load(refs)]
        assert len(loaded) == 2 and all(isinstance(ds, Dataset) for ds in loaded)
        assert sorted(str(ds.get("LossyImageCompression", "")) for ds in loaded) == ["", "01"]
