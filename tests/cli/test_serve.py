"""`pacs-cae serve` argument handling and start-up failures (the happy path is in tests/e2e)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacs_cae.cli import app
from pacs_cae.cli.options import flag_overrides
from pacs_cae.cli.serve import safe_url


def test_flags_become_dotted_overrides() -> None:
    assert flag_overrides(host="127.0.0.1", port=4242, ae_title="X", database_url=None, device="cpu", model=None,
                      data_dir=None, log_level=None) == {
        "server.host": "127.0.0.1", "server.port": 4242, "server.ae_title": "X", "codec.device": "cpu"}


def test_database_url_is_logged_without_password() -> None:
    shown = safe_url("postgresql+psycopg://pacs:s3cret@db.example:5432/pacs")
    assert "s3cret" not in shown and "db.example" in shown and "pacs" in shown


def test_invalid_configuration_exits_2() -> None:
    result = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert "server.port" in result.output


def test_unknown_model_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("PACS_CAE_")]:
        monkeypatch.delenv(name)
    with caplog.at_level(logging.ERROR, logger="pacs_cae.serve"):
        result = CliRunner().invoke(app, ["serve", "--port", "11190", "--model", "no-such-model",
                                          "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "no-such-model" in caplog.text
