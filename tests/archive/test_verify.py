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
from tests.archive.factories import make_mr_series, make_sr
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
