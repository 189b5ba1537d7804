"""The quality gate through the real path: a server running a deliberately bad (all-zero) model.

C-STORE keeps every slice losslessly; `pacs-cae worker --drain` then encodes every eligible slice, decodes it,
finds it below the floor and keeps the series losslessly: getscu
returns the original instances byte for byte (original UIDs, no lossy marking), `pacs-cae stats --json`
counts the fallbacks, and the server log names the reason.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pacs_cae.archive.workers import PSNR_MARGIN_DB, card_best_psnr
from pacs_cae.codec.weights import initial_model, read_card, save_model
from pacs_cae.testing import dcmtk
from pacs_cae.testing.factories import make_mr_series
from pacs_cae.testing.server_process import (
    clean_environment,
    drain,
    free_port,
    pacs_cae_command,
    start_server,
    write_config,
)
from tests.e2e.compare import check_lossless
from tests.e2e.scenario import codec_under_test, write_datasets

pytestmark = pytest.mark.e2e


def _zero_model(models_dir: Path) -> str:
    model = initial_model(seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    save_model(model, models_dir / "cae-zero", model_id="cae-zero", trained=False)
    return "cae-zero"


def _store_and_get_back_exact(tmp_path: Path, database_url: str, codec: dict[str, object], series: list,
                              ) -> tuple[str, dict]:
    """Serve with ``codec``, storescu ``series``, getscu it: every instance back exact. Returns (log, stats)."""
    port = free_port()
    config = write_config(tmp_path / "gate.toml", data_dir=tmp_path / "data", port=port,
                          database_url=database_url, codec=codec, remotes={},
                          compression={"serve_workers": 0})  # the `pacs-cae worker --drain` below compresses
    if not database_url.startswith("sqlite"):
        subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], check=True,
                       capture_output=True, env=clean_environment())
    files = write_datasets(series, tmp_path / "in")
    server = start_server(tmp_path, config, port)
    try:
        dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port), *map(str, files)])
        drained = drain(config, tmp_path)
        assert drained.returncode == 0, drained.stdout + drained.stderr
        out = tmp_path / "get"
        out.mkdir()
        dcmtk.run("getscu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "-S", "-od", str(out), *dcmtk.keys(
            {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": str(series[0].StudyInstanceUID),
             "SeriesInstanceUID": str(series[0].SeriesInstanceUID)}), "127.0.0.1", str(port)])
        retrieved = {str(ds.SOPInstanceUID): ds for ds in dcmtk.read_dir(out)}
        assert set(retrieved) == {str(ds.SOPInstanceUID) for ds in series}
        for original in series:
            check_lossless(original, retrieved[str(original.SOPInstanceUID)])
        stats = json.loads(subprocess.run(
            [*pacs_cae_command(), "stats", "--json", "--config", str(config)], check=True, capture_output=True,
            text=True, env=clean_environment()).stdout)
    finally:
        assert server.stop(signal.SIGTERM) == 0, server.log()
    return server.log() + drained.stderr, stats


def test_bad_model_falls_back_to_lossless_end_to_end(module_database_url: str, tmp_path: Path) -> None:
    model_id = _zero_model(tmp_path / "models")
    codec = {"model": model_id, "models_dir": str(tmp_path / "models"), "device": "cpu", "gate": True,
             "min_psnr_db": 30.0, "max_compression_ratio": "none"}
    series = make_mr_series(3, 256, 256, 12, patient_id="PCAE-GATE", patient_name="Gate^Phantom", seed=7)
    log, stats = _store_and_get_back_exact(tmp_path, module_database_url, codec, series)
    assert stats["fallbacks"]["quality_gate"] == 3
    assert [(g["storage"], g["instances"]) for g in stats["by_storage"]] == [("lossless", 3)]
    assert log.count("stored losslessly instead of by the CAE: quality-gate: PSNR") == 3


def test_default_floors_keep_the_shipped_model_from_storing_lossy(database_url: str, tmp_path: Path) -> None:
    """Out of the box (floors not configured) no slice is stored lossy by the shipped cae-paper.

    Its card measured ~32 dB, far under the default 50 dB floor, so the worker does not even run it (issue 12:
    no CPU spent on a model that cannot meet the floor): every slice is archived losslessly with that reason,
    logged once, and comes back exact.
    """
    model_id, _ = codec_under_test()
    series = make_mr_series(2, 512, 512, 12, patient_id="PCAE-FLOOR", patient_name="Floor^Phantom", seed=11)
    log, stats = _store_and_get_back_exact(tmp_path, database_url, {"model": model_id, "device": "cpu"},
                                           series)
    assert [(g["storage"], g["instances"]) for g in stats["by_storage"]] == [("lossless", 2)]
    best = card_best_psnr(SimpleNamespace(card=read_card(model_id)))
    if best is not None and best < 50.0 - PSNR_MARGIN_DB:  # the shipped cae-paper: skipped, never run
        assert stats["fallbacks"]["by_reason"] == {"series-lossless": 2}
        assert log.count(f"model {model_id!r} cannot meet min_psnr_db 50") >= 1
        assert log.count("stored losslessly instead of by the CAE: series-lossless: model") == 2
    else:  # a model whose card measured nothing: encoded, measured against the floor, refused
        assert stats["fallbacks"]["quality_gate"] == 2
        assert log.count("stored losslessly instead of by the CAE: quality-gate:") == 2
