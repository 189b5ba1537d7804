"""``archive.stats.collect`` and ``pacs-cae stats`` on the fixture archive (figures worked out by hand)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pacs_cae.archive.stats import collect

SLICE = 256 * 256 * 2  # original PixelData bytes of every fixture image


@pytest.fixture
def figures(archive_db):
    with archive_db.session(readonly=True) as session:
        return collect(session)


def test_counts_and_totals(figures):
    assert (figures["patients"], figures["studies"], figures["series"], figures["instances"]) == (3, 4, 5, 8)
    assert figures["original_bytes"] == 7 * SLICE
    assert figures["stored_pixel_bytes"] == 4 * 100 + 3 * 1000
    assert figures["metadata_bytes"] == 8 * 10
    assert figures["stored_bytes"] == 3400 + 80
    assert figures["ratio"] == pytest.approx(7 * SLICE / 3480, abs=1e-3)
    assert figures["pixel_ratio"] == pytest.approx(7 * SLICE / 3400, abs=1e-3)
    assert (figures["oldest_study_date"], figures["newest_study_date"]) == ("20220601", "20240301")
    assert figures["fallbacks"] == {"total": 1, "quality_gate": 1, "by_reason": {"quality-gate": 1}}


def test_per_storage_and_model(figures):
    rows = {(r["storage"], r["model"]): r for r in figures["by_storage"]}
    assert set(rows) == {("cae", "cae-test"), ("lossless", None), ("none", None)}
    cae = rows[("cae", "cae-test")]
    assert (cae["instances"], cae["original_bytes"], cae["stored_pixel_bytes"], cae["stored_bytes"]) == (
        4, 4 * SLICE, 400, 440)
    assert cae["pixel_ratio"] == pytest.approx(4 * SLICE / 400, abs=1e-3)
    assert rows[("none", None)]["pixel_ratio"] is None
    assert sum(r["instances"] for r in rows.values()) == figures["instances"]


def test_per_modality(figures):
    rows = {r["modality"]: r for r in figures["by_modality"]}
    assert {m: r["instances"] for m, r in rows.items()} == {"CT": 1, "MR": 6, "SR": 1}
    assert rows["MR"]["original_bytes"] == 6 * SLICE and rows["MR"]["stored_pixel_bytes"] == 2400
    assert rows["SR"]["original_bytes"] == 0 and rows["SR"]["ratio"] == 0.0


def test_cli_json_matches_collect(archive_db, figures, monkeypatch):
    from pacs_cae.cli import app

    monkeypatch.delenv("PACS_CAE_CONFIG", raising=False)
    monkeypatch.setenv("PACS_CAE_DATABASE_URL", archive_db.url)
    result = CliRunner().invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == figures


def test_cli_table_from_config_file(archive_db, tmp_path, monkeypatch):
    from pacs_cae.cli import app

    monkeypatch.delenv("PACS_CAE_DATABASE_URL", raising=False)
    config = tmp_path / "pacs-cae.toml"
    config.write_text(f'[database]\nurl = "{archive_db.url}"\n')
    result = CliRunner().invoke(app, ["stats", "--config", str(config)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "cae-test" in result.output and "quality-gate fallbacks" in result.output
    assert "20220601" in result.output
