"""load_settings: defaults < TOML file < PACS_CAE_* environment < overrides, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs_cae.config import ConfigError, Remote, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("PACS_CAE_") and name != "PACS_CAE_TEST_PG_URL":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacs-cae.toml"
    path.write_text(text)
    return path


def test_defaults_run_with_nothing_configured():
    s = load_settings()
    assert isinstance(s, Settings)
    assert (s.server.ae_title, s.server.port, s.server.host) == ("PACSCAE", 11112, "0.0.0.0")
    assert s.database.url == "sqlite:///pacs-cae-data/archive.db"
    assert (s.codec.model, s.codec.device, s.codec.lossy_uid) == ("cae-paper", "auto", "derive")
    assert s.server.duplicate_policy == "keep-first" and s.server.tcp_nodelay is True
    assert s.codec.modalities == ["MR"] and s.codec.min_psnr_db == 50.0 and s.codec.max_abs_error is None
    assert s.codec.max_compression_ratio == 24.0
    assert (s.codec.batch_size, s.codec.chunk_slices) == (0, 8)  # forward per device, chunks of 8
    assert s.remotes == {} and s.data_dir == "pacs-cae-data" and s.log_level == "INFO"


def test_toml_file(tmp_path):
    s = load_settings(write(tmp_path, """
        log_level = "debug"
        [server]
        ae_title = "ARCHIVE"
        port = 4242
        allowed_calling_aets = ["MRI1", "VIEWER"]
        [database]
        url = "postgresql+psycopg://pacs@db/pacs"
        [codec]
        device = "cpu"
        lossy_uid = "keep"
        min_psnr_db = 35
        modalities = ["mr", "CT"]
        [remotes]
        STORESCP = { host = "127.0.0.1", port = 11113 }
        VIEWER = "10.0.0.5:104"
    """))
    assert (s.server.ae_title, s.server.port, s.server.allowed_calling_aets) == ("ARCHIVE", 4242, ["MRI1", "VIEWER"])
    assert s.database.url == "postgresql+psycopg://pacs@db/pacs"
    assert (s.codec.device, s.codec.lossy_uid, s.codec.min_psnr_db) == ("cpu", "keep", 35.0)
    assert s.codec.modalities == ["MR", "CT"] and s.log_level == "DEBUG"
    assert s.remotes == {"STORESCP": Remote("127.0.0.1", 11113), "VIEWER": Remote("10.0.0.5", 104)}


def test_environment_beats_file_and_overrides_beat_environment(tmp_path, monkeypatch):
    path = write(tmp_path, '[server]\nport = 4242\nae_title = "FILE"\n[codec]\ngate = true\n')
    monkeypatch.setenv("PACS_CAE_SERVER_PORT", "5000")
    monkeypatch.setenv("PACS_CAE_CODEC_GATE", "false")
    monkeypatch.setenv("PACS_CAE_CODEC_MIN_PSNR_DB", "none")
    monkeypatch.setenv("PACS_CAE_SERVER_ALLOWED_CALLING_AETS", "A, B")
    monkeypatch.setenv("PACS_CAE_REMOTES", "STORESCP=127.0.0.1:11113,PACS2=host.example:104")
    monkeypatch.setenv("PACS_CAE_LOG_LEVEL", "warning")
    s = load_settings(path)
    assert (s.server.port, s.server.ae_title, s.codec.gate, s.codec.min_psnr_db) == (5000, "FILE", False, None)
    assert s.server.allowed_calling_aets == ["A", "B"] and s.log_level == "WARNING"
    assert s.remotes == {"STORESCP": Remote("127.0.0.1", 11113), "PACS2": Remote("host.example", 104)}
    s = load_settings(path, {"server.port": 6000, "server.ae_title": "FLAG", "codec.device": "cuda:1"})
    assert (s.server.port, s.server.ae_title, s.codec.device) == (6000, "FLAG", "cuda:1")


def test_a_set_batch_size_is_also_the_chunk():
    assert load_settings(None, {"codec.batch_size": 3}).codec.chunk_slices == 3


def test_config_file_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PACS_CAE_CONFIG", str(write(tmp_path, '[server]\nae_title = "FROMENV"\n')))
    assert load_settings().server.ae_title == "FROMENV"


def test_database_url_follows_data_dir_unless_set(tmp_path, monkeypatch):
    assert load_settings(overrides={"data_dir": "/srv/pacs"}).database.url == "sqlite:////srv/pacs/archive.db"
    monkeypatch.setenv("PACS_CAE_DATA_DIR", "/var/lib/pacs")
    assert load_settings().database.url == "sqlite:////var/lib/pacs/archive.db"
    monkeypatch.setenv("PACS_CAE_DATABASE_URL", "sqlite:///elsewhere.db")
    assert load_settings().database.url == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown key"),
        ("[servr]\nport = 1\n", "unknown key"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nport = \"abc\"\n", "server.port"),
        ("[server]\nduplicate_policy = \"newest\"\n", "duplicate_policy"),
        ("[server]\nae_title = \"A_TITLE_LONGER_THAN_16\"\n", "ae_title"),
        ("[codec]\nlossy_uid = \"random\"\n", "lossy_uid"),
        ("[codec]\ndevice = \"tpu\"\n", "codec.device"),
        ("[codec]\ngate = \"maybe\"\n", "codec.gate"),
        ("[codec]\nbatch_size = -1\n", "codec.batch_size"),
        ("[remotes]\nX = { host = \"h\" }\n", "remotes.X"),
        ("[remotes]\nX = \"nohostport\"\n", "remotes.X"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_invalid_configuration_is_reported(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, text))


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_bad_environment_value_is_reported(monkeypatch):
    monkeypatch.setenv("PACS_CAE_SERVER_MAX_ASSOCIATIONS", "many")
    with pytest.raises(ConfigError, match="max_associations"):
        load_settings()


def test_shipped_example_config_loads_and_documents_every_key():
    import dataclasses

    from pacs_cae.config import CodecSettings, CompressionSettings, DatabaseSettings, ServerSettings

    example = REPO / "deploy" / "pacs-cae.toml"
    s = load_settings(example)
    assert s.server.ae_title == "PACSCAE" and "STORESCP" in s.remotes
    text = example.read_text()
    docs = (REPO / "docs" / "configuration.md").read_text()
    for section, cls in (("server", ServerSettings), ("database", DatabaseSettings), ("codec", CodecSettings),
                         ("compression", CompressionSettings)):
        for f in dataclasses.fields(cls):
            assert f"{f.name} =" in text, f"deploy/pacs-cae.toml lacks {section}.{f.name}"
            assert f"PACS_CAE_{section.upper()}_{f.name.upper()}" in docs, f"docs lack {section}.{f.name}"
