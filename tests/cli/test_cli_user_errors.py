"""The CLI as a user meets it: a mistake gets one line with the reason and a non-zero exit, never a traceback,
and no command reports a made-up empty archive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pacs_cae.testing.factories import make_mr_series, make_sr
from pacs_cae.testing.server_process import clean_environment, pacs_cae_command
from tests.e2e.scenario import write_datasets


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*pacs_cae_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False, env={**clean_environment(), "COLUMNS": "80"})


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("command", [["verify"], ["stats"], ["stats", "--json"], ["db", "current"],
                                     ["export", "out", "--all"]])
def test_reading_commands_refuse_a_missing_archive(tmp_path: Path, command: list[str]) -> None:
    """Run from a directory with no archive: refused, and nothing is created there."""
    proc = cli(tmp_path, *command)
    one_line_error(proc, "no archive at", str(tmp_path / "pacs-cae-data" / "archive.db"))
    assert not (tmp_path / "pacs-cae-data").exists()


@pytest.mark.parametrize(("command", "url", "reason"), [
    (["stats"], "not-a-url", "invalid database URL"),
    (["verify"], "postgresql+psycopg://nobody@127.0.0.1:1/none", "Connection refused"),
    (["db", "upgrade"], "nosuchdriver://x/y", "invalid database URL"),
    (["export", "out", "--all"], "postgresql+psycopg://nobody@127.0.0.1:1/none", "Connection refused"),
])
def test_bad_database_url_is_one_line(tmp_path: Path, command: list[str], url: str, reason: str) -> None:
    one_line_error(cli(tmp_path, *command, "--database-url", url), reason)


def test_import_summary_export_unknown_and_json(tmp_path: Path, database_url: str) -> None:
    """import: one summary line (no per-slice log lines) and --json; export of an unknown study says so."""
    series = make_mr_series(3, 64, 64, 12, patient_id="CLI-1", patient_name="Cli^Test")
    files = write_datasets([*series, make_sr(patient_id="CLI-1", patient_name="Cli^Test",
                                             study_uid=str(series[0].StudyInstanceUID))], tmp_path / "in")
    (tmp_path / "junk.txt").write_text("not dicom")
    assert cli(tmp_path, "db", "upgrade", "--database-url", database_url).returncode == 0
    args = ["--database-url", database_url, "--model", "none"]
    proc = cli(tmp_path, "import", str(tmp_path / "in"), str(tmp_path / "junk.txt"), *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [proc.stdout.strip()], proc.stdout
    assert proc.stdout.startswith(f"imported {len(files)} of {len(files) + 1} files"), proc.stdout
    assert proc.stderr.strip().startswith("skipped") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    again = cli(tmp_path, "import", str(tmp_path / "in"), *args, "--json")
    summary = json.loads(again.stdout)
    # keep-first (the default): a byte-identical re-send is success and writes nothing
    assert summary["identical"] == len(files) and summary["files"] == len(files) and summary["failed"] == 0

    args = ["--database-url", database_url]
    unknown = cli(tmp_path, "export", str(tmp_path / "out"), "--study", "1.2.3.999", *args)
    assert unknown.returncode == 1
    assert "no study 1.2.3.999 in the archive" in unknown.stderr, unknown.stderr
    assert "Traceback" not in unknown.stderr
    both = cli(tmp_path, "export", str(tmp_path / "out"), "--study", str(series[0].StudyInstanceUID),
               "--study", "1.2.3.999", *args, "--json")
    report = json.loads(both.stdout)
    assert report["exported"] == len(files) and report["not_in_archive"] == ["study 1.2.3.999"]
    assert both.returncode == 1

    stats = cli(tmp_path, "stats", "--database-url", database_url)
    assert stats.returncode == 0, stats.stderr
    assert max(len(line) for line in stats.stdout.splitlines()) <= 80, stats.stdout
    assert "…" not in stats.stdout, stats.stdout
    assert json.loads(cli(tmp_path, "db", "current", "--json", "--database-url", database_url).stdout)["up_to_date"]


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate/train on a base install: which extra to install, in one line."""
    import typer

    from pacs_cae.cli.options import require_extra

    with pytest.raises(typer.Exit) as exit_info:
        require_extra("evaluate", "train", "json", "no_such_module_for_pacs_cae")
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err.strip()
    assert err == ("pacs-cae evaluate: needs the 'train' extra (missing: no_such_module_for_pacs_cae): "
                   "pip install 'pacs-cae[train]' (or scripts/setup train)")
