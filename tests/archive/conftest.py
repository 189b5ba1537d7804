"""Fixtures for the archive use-case tests: a models dir, settings, and an open Archive per backend."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

# The test modules import tests.archive.*; make the repository root importable however pytest was started.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pacs_cae.archive.service import Archive, ArchiveCodecs
from pacs_cae.codec import BatchingCodec, CodecRegistry
from pacs_cae.codec.weights import initial_model, save_model
from pacs_cae.config import CodecSettings, CompressionSettings, DatabaseSettings, Settings
from pacs_cae.store.db import Database
from tests.archive.helpers import TEST_MODEL, ZERO_MODEL

REPO_MODELS = _ROOT / "models"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped untrained checkpoint (or an identical fresh one) plus the zero-weights model."""
    base = tmp_path_factory.mktemp("models")
    shipped = REPO_MODELS / TEST_MODEL
    if (shipped / "card.json").is_file() and (shipped / "model.safetensors").is_file():
        shutil.copytree(shipped, base / TEST_MODEL)
    else:
        save_model(initial_model(seed=0), base / TEST_MODEL, model_id=TEST_MODEL, trained=False)
    zero = initial_model(seed=0)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    save_model(zero, base / ZERO_MODEL, model_id=ZERO_MODEL, trained=False)
    return base


@pytest.fixture(scope="session")
def registry(models_dir: Path) -> CodecRegistry:
    """One registry for the whole session, so each model is loaded once."""
    return CodecRegistry(models_dir, device="cpu")


@pytest.fixture
def make_settings(models_dir: Path, database_url: str) -> Callable[..., Settings]:
    """``make_settings(**codec_overrides, duplicate_policy=...)`` -> Settings on this test's database."""

    def _make(duplicate_policy: str = "keep-first", **codec: object) -> Settings:
        values: dict[str, object] = {"model": TEST_MODEL, "device": "cpu", "models_dir": str(models_dir),
                                     "gate": False, "batch_wait_ms": 0.5,
                                     # phantoms compress far beyond 24:1; tests of the lossy path lift the
                                     # ratio ceiling (test_ingest_retrieve covers it)
                                     "max_compression_ratio": None}
        values.update(codec)
        settings = Settings(database=DatabaseSettings(url=database_url), codec=CodecSettings(**values),
                            compression=CompressionSettings(delay_s=0.0, poll_s=0.05))
        settings.server.duplicate_policy = duplicate_policy
        return settings

    return _make


@pytest.fixture
def open_archive(make_settings: Callable[..., Settings], registry: CodecRegistry) -> Iterator[Callable[..., Archive]]:
    """``open_archive(**settings_overrides)`` -> an Archive on a migrated database (closed after the test)."""
    opened: list[Archive] = []
    database: list[Database] = []

    def _open(**overrides: object) -> Archive:
        settings = make_settings(**overrides)
        if not database:
            db = Database(settings.database.url)
            db.upgrade()
            database.append(db)
        model = registry.get(settings.codec.model)
        codecs = ArchiveCodecs(registry, BatchingCodec(model, max_batch=8, max_wait_ms=0.5))
        archive = Archive(settings, database[0], codecs)
        opened.append(archive)
        return archive

    yield _open
    for archive in reversed(opened):  # last opened first: each hands the registry back to what it replaced
        archive.codecs.close()
    for db in database:
        db.dispose()
