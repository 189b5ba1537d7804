"""`pacs-cae verify`: every stored instance goes through the retrieve path; a damaged blob fails the run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from pacs_cae.archive.service import Archive
from pacs_cae.cli import app
from pacs_cae.store.schema import Instance, InstanceBlob
from pacs_cae.testing.factories import make_mr_series, make_sr
from tests.archive.helpers import TEST_MODEL, store_and_compress


def _verify(database_url: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    monkeypatch.setenv("PACS_CAE_CODEC_MODEL", TEST_MODEL)
    monkeypatch.setenv("PACS_CAE_CODEC_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("PACS_CAE_CODEC_DEVICE", "cpu")
    result = CliRunner().invoke(app, ["verify", "--database-url", database_url, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_verify_passes_then_catches_a_damaged_blob(
    open_archive: Callable[..., Archive], database_url: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = open_archive()
    series = make_mr_series(2, rows=64, cols=64)
    store_and_compress(archive, *series, make_sr())
    damaged_uid = series[1].SOPInstanceUID

    code, report = _verify(database_url, models_dir, monkeypatch)
    assert code == 0, report
    assert report["checked"] == 3 and report["failed"] == 0
    assert report["by_storage"] == {f"cae:{TEST_MODEL}": 2, "none": 1}

    with archive.database.session() as session:
        pk = session.scalar(select(Instance.id).where(Instance.sop_instance_uid == damaged_uid))
        blob = session.scalar(select(InstanceBlob.pixel_blob).where(InstanceBlob.instance_pk == pk))
        session.execute(update(InstanceBlob).where(InstanceBlob.instance_pk == pk).values(pixel_blob=blob[:-7]))

    code, report = _verify(database_url, models_dir, monkeypatch)
    assert code == 1
    assert report["failed"] == 1
    assert report["failures"][0]["sop_instance_uid"] == damaged_uid


def test_verify_checks_stored_pixels_against_the_image_attributes(
    open_archive: Callable[..., Archive], database_url: str, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored instance whose Pixel Data no longer fits Rows x Columns x ... fails, though it decodes."""
    from pacs_cae.dicom.metadata import encode_metadata

    archive = open_archive()
    ds = make_mr_series(1, rows=2000, cols=100)[0]  # outside the codec policy: stored losslessly
    archive.store(ds)
    with archive.database.session() as session:
        pk = session.scalar(select(Instance.id).where(Instance.sop_instance_uid == ds.SOPInstanceUID))
        wrong = ds.copy()
        wrong.Rows = 1999  # what a damaged or hand-edited metadata blob would say
        session.execute(update(InstanceBlob).where(InstanceBlob.instance_pk == pk)
                        .values(metadata_blob=encode_metadata(wrong)))
    code, report = _verify(database_url, models_dir, monkeypatch)
    assert code == 1, report
    assert report["failures"][0]["sop_instance_uid"] == ds.SOPInstanceUID
    assert "image attributes call for" in report["failures"][0]["reason"]


def test_verify_with_missing_weights_reports_instead_of_crashing(
    open_archive: Callable[..., Archive], database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = open_archive()
    store_and_compress(archive, *make_mr_series(2, rows=64, cols=64))  # CAE blobs, whose weights then go missing
    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    result = CliRunner().invoke(app, ["verify", "--database-url", database_url, "--json"],
                                env={"PACS_CAE_CODEC_MODEL": TEST_MODEL, "PACS_CAE_CODEC_MODELS_DIR": str(empty_models),
                                     "PACS_CAE_CODEC_DEVICE": "cpu"})
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    report = json.loads(result.stdout)
    assert report["checked"] == 2 and report["failed"] == 2
    assert TEST_MODEL in report["failures"][0]["reason"]
    text = CliRunner().invoke(app, ["verify", "--database-url", database_url],
                              env={"PACS_CAE_CODEC_MODEL": TEST_MODEL, "PACS_CAE_CODEC_MODELS_DIR": str(empty_models),
                                   "PACS_CAE_CODEC_DEVICE": "cpu"})
    assert text.exit_code == 1 and "2 instances checked, 2 failed" in text.output
    assert "Traceback" not in text.output
