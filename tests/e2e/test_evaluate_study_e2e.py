"""``pacs-cae evaluate --study UID`` on a series stored through a real `pacs-cae serve` by DCMTK storescu.

The archive keeps one series of the study as CAE (lossy) copies and one losslessly (the codec policy's size
limit decides). Evaluate must read the lossless originals through the archive, score every codec on exactly
those pixels, and skip the lossy copies with the reason, never score them.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import pytest

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
from tests.e2e.scenario import UNTRAINED_FLOOR_DB, write_datasets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stored(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list, list]]:
    """(config, CAE-stored datasets, losslessly stored datasets) after storescu sent one study."""
    missing = dcmtk.missing_tools()
    if missing:
        pytest.fail(f"DCMTK tools not found: {missing} (install the `dcmtk` package)", pytrace=False)
    work = tmp_path_factory.mktemp("evaluate-study")
    port = free_port()
    codec = {"model": "cae-paper-init", "device": "cpu", "min_psnr_db": UNTRAINED_FLOOR_DB,
             "require_gain": False, "max_rows": 256, "max_columns": 256}
    config = write_config(work / "pacs-cae.toml", data_dir=work / "data", port=port,
                          database_url=module_database_url, codec=codec, remotes={})
    lossy = make_mr_series(3, 256, 256, 12, patient_id="PCAE-E", patient_name="Eval^Phantom", seed=3)
    study = str(lossy[0].StudyInstanceUID)
    lossless = make_mr_series(2, 320, 320, 12, patient_id="PCAE-E", patient_name="Eval^Phantom", study_uid=study,
                              series_number=2, seed=4)
    files = write_datasets([*lossy, *lossless], work / "in")
    if not module_database_url.startswith("sqlite"):
        upgrade = subprocess.run([*pacs_cae_command(), "db", "upgrade", "--config", str(config)], cwd=work,
                                 capture_output=True, text=True, timeout=180, env=clean_environment(), check=False)
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    server = start_server(work, config, port)
    try:
        dcmtk.run("storescu", ["-aec", "PACSCAE", "-aet", "E2ESCU", "127.0.0.1", str(port), *map(str, files)],
                  timeout=300)
        drained = drain(config, work)  # C-STORE kept everything losslessly; the worker makes the CAE copies
        assert drained.returncode == 0, drained.stdout + drained.stderr
        yield config, lossy, lossless
    finally:
        server.stop(signal.SIGTERM)


def _evaluate(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*pacs_cae_command(), "evaluate", *args, "--config", str(config)], cwd=config.parent,
                          capture_output=True, text=True, timeout=600, env=clean_environment(), check=False)


def test_evaluate_study_scores_the_originals_and_skips_lossy_copies(stored) -> None:
    config, lossy, lossless = stored
    study = str(lossy[0].StudyInstanceUID)
    run = _evaluate(config, "--study", study, "--model", "cae-paper-init", "--slices", "0", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert sorted(s["sop_instance_uid"] for s in report["slices"]) == sorted(str(d.SOPInstanceUID) for d in lossless)
    assert {(s["rows"], s["columns"], s["bits_stored"]) for s in report["slices"]} == {(320, 320, 12)}
    skipped = {s["sop_instance_uid"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {str(d.SOPInstanceUID) for d in lossy}
    assert all("lossy (CAE) copy" in reason for reason in skipped.values())
    assert "3 instance(s) skipped" in run.stderr
    # the pixels scored are the ones storescu sent: JPEG-LS of the sent slices has exactly the bytes reported
    sent = sum(len(imagecodecs.jpegls_encode(d.pixel_array)) for d in lossless)
    by_name = {c["name"]: c for c in report["codecs"]}
    assert by_name["JPEG-LS lossless"]["summary"]["compressed_bytes"] == sent
    assert by_name["CAE cae-paper-init"]["summary"]["slices"] == 2
    assert {"JPEG 2000", "JPEG-XL", "AVIF"} <= {c["family"] for c in report["codecs"]}
    assert "bd_rate" in report and report["settings"]["config"] == str(config)


def test_evaluate_study_errors_are_one_line(stored) -> None:
    config, lossy, _ = stored
    unknown = _evaluate(config, "--study", "1.2.3.4.5.6.7", "--model", "cae-paper-init", "--no-standard")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "pacs-cae evaluate: study 1.2.3.4.5.6.7 is not in the archive"
    ]
    both = _evaluate(config, "--study", str(lossy[0].StudyInstanceUID), str(config))
    assert both.returncode == 2 and "one of them" in both.stderr and "Traceback" not in both.stderr
