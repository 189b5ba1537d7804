"""One settings object for every command: defaults < TOML file < ``PACS_CAE_*`` environment < overrides.

The defaults alone run a working archive (embedded SQLite under ``pacs-cae-data/``, the shipped model, AE title
``PACSCAE`` on port 11112), so ``pacs-cae serve`` needs no configuration at all. See docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacs_cae.vocabulary import DuplicatePolicy, LossyUidPolicy

ENV_PREFIX = "PACS_CAE_"
#: Environment variable naming a TOML file, used when ``load_settings`` gets no path.
CONFIG_ENV = "PACS_CAE_CONFIG"
DEFAULT_DATA_DIR = "pacs-cae-data"

#: Patient attributes a site may add to the identity check; Patient ID and its issuer are always compared.
PATIENT_IDENTITY_ATTRIBUTES = ("PatientName", "PatientBirthDate", "PatientSex")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Exact codings a site may name (= ``pacs_cae.codec.lossless.STANDARD_METHODS``; config stays torch-free).
LOSSLESS_METHODS = ("jpeg-ls", "jpeg-2000", "jpeg-xl")
#: What the worker re-codes lossless copies with unless told otherwise: JPEG-LS, which decodes several times
#: faster than JPEG-XL on every retrieve for a few % more bytes (docs/configuration.md, "Lossless storage").
DEFAULT_LOSSLESS_METHODS = ("jpeg-ls",)
#: Slices per worker / retrieve chunk when ``codec.batch_size`` is 0 (CodecSettings.chunk_slices).
DEFAULT_CHUNK_SLICES = 8


class ConfigError(ValueError):
    """A configuration value, key or file is invalid; the message names the offending key and source."""


@dataclass
class ServerSettings:
    """The DICOM application entity."""

    ae_title: str = "PACSCAE"
    host: str = "0.0.0.0"
    port: int = 11112
    # serve processes accepting on the port (pacs_cae/net/processes.py); 0 = one per CPU core. One Python
    # process runs its associations on one core; the limits below are then shared out between the processes.
    processes: int = 1
    max_associations: int = 16  # established associations; connections still negotiating do not count
    max_associations_per_address: int = 8  # established associations from one IP address
    max_pending_connections: int = 32  # TCP connections without an association yet; the oldest is dropped
    max_pending_per_address: int = 8  # ... from one IP address (its oldest is dropped first)
    association_request_timeout_s: float = 5.0  # a connection must send its A-ASSOCIATE-RQ within this
    idle_timeout_s: float = 60.0  # an association silent this long is aborted (network and DIMSE timeout)
    # Maximum Length we announce; a longer P-DATA PDU gets an A-ABORT. 128 KiB (DCMTK's largest): a 512x512
    # slice in 5 PDUs instead of 33, each of which costs pynetdicom a trip through its Python state machine.
    max_pdu_size: int = 131072
    max_dataset_bytes: int = 512 * 1024 * 1024  # most one association may buffer for one DIMSE message
    allowed_calling_aets: list[str] = field(default_factory=list)  # empty = accept any calling AE
    accept_any_called_aet: bool = False  # False: the called AE title must be ae_title
    tcp_nodelay: bool = True
    # A re-sent SOP Instance UID: identical content is success; other content keeps the first copy (warning
    # 0xB000), unless the calling AE is in replace_calling_aets (or duplicate_policy = "replace": anyone).
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST
    replace_calling_aets: list[str] = field(default_factory=list)
    # Compared with the stored patient besides Patient ID + Issuer (a conflict refuses the instance, 0xC004).
    patient_identity_attributes: list[str] = field(default_factory=list)
    # DICOM TLS (PS3.15 Annex B; pacs_cae/net/tls.py). A certificate (PEM) turns TLS on for the port;
    # the key may be a separate PEM file or sit in the certificate file. CA certificates set = mutual
    # TLS: clients must present a certificate they signed (they also verify our tls = true remotes).
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_certificates: str | None = None


@dataclass
class DatabaseSettings:
    """Where the index, metadata and blobs live."""

    url: str = f"sqlite:///{DEFAULT_DATA_DIR}/archive.db"
    auto_upgrade: bool = True  # applies to SQLite only; PostgreSQL is upgraded by `pacs-cae db upgrade`
    # SQLite only: NORMAL = committed data survives a process crash, FULL = also a power loss (fsync per commit)
    sqlite_synchronous: str = "normal"

    def sqlite_path(self) -> Path | None:
        """The database file of a file-backed SQLite URL (relative to the working directory), else None."""
        return sqlite_path(self.url)


@dataclass
class CodecSettings:
    """The learned codec and the policy that decides which slices go through it."""

    model: str = "cae-paper"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    lossy_uid: LossyUidPolicy = LossyUidPolicy.DERIVE
    models_dir: str | None = None  # None = the repo's models/
    brotli_quality: int = 5
    #: Operating point of a variable-rate model (mshp family: 1 = smallest .. its card's count = best);
    #: None = the model's default. Must stay None for single-point models such as cae-paper.
    quality: int | None = None
    #: Slices per encoder/decoder forward; 0 = per device (1 on the CPU, 8 on CUDA: codec.device's
    #: AUTO_FORWARD_BATCH, where the reason is).
    batch_size: int = 0
    batch_wait_ms: float = 2.0
    gate: bool = True
    # Floors a radiologist can sign (docs/configuration.md, "Quality floors"): a slice that misses one is
    # stored losslessly. 50 dB (R = slice range) is an RMS error of 0.3 % of the range, well under the
    # thermal noise of clinical MR; 24:1 against BitsAllocated is the Canadian Association of
    # Radiologists' ceiling for lossy MR.
    min_psnr_db: float | None = 50.0
    #: Largest pixel error allowed, in stored levels. A model with an error bound (``mshp`` residual layer)
    #: encodes with it, so every pixel meets it by construction (0 = exact: a learned lossless tier); for
    #: other models it is a measured floor. Either way each decoded slice is checked before it is stored.
    max_abs_error: float | None = None
    max_compression_ratio: float | None = 24.0
    require_gain: bool = True  # keep a CAE blob only when it is smaller than the slice's lossless encoding
    modalities: list[str] = field(default_factory=lambda: ["MR"])
    #: Exact codings the compression worker tries on the copies it keeps lossless (the smallest verified one
    #: per slice is kept); empty = C-STORE encodes JPEG-LS at once. docs/configuration.md, "Lossless storage".
    lossless_methods: list[str] = field(default_factory=lambda: list(DEFAULT_LOSSLESS_METHODS))
    max_rows: int = 1024
    max_columns: int = 1024
    min_rows: int = 32
    min_columns: int = 32

    @property
    def chunk_slices(self) -> int:
        """Slices a compression worker encodes and judges, and a retrieve reads and decodes, at a time.

        ``batch_size`` when set; with the per-device forward (0) a chunk of 8, several forwards on the CPU:
        a retrieve's producer then hands over a chunk per thread switch instead of a slice.
        """
        return self.batch_size or DEFAULT_CHUNK_SLICES


@dataclass
class CompressionRule:
    """One archive compression rule (like dcm4chee's): which instances, which codec, which floors.

    Rules are tried in order; the first whose conditions all hold decides. An empty list matches anything.
    Floors here can only tighten the ``[codec]`` floors, never loosen them; ``max_abs_error`` is also the bound
    a bounded model encodes with (0: exact), ``quality`` the operating point otherwise.
    """

    name: str = "default"
    modalities: list[str] = field(default_factory=lambda: ["MR"])
    sop_classes: list[str] = field(default_factory=list)
    body_parts: list[str] = field(default_factory=list)
    calling_aets: list[str] = field(default_factory=list)
    after_days: float = 0.0  # compress only once the study (StudyDate, else receipt) is this many days old
    compress: bool = True  # false: instances this rule matches stay lossless
    model: str = ""  # "" = codec.model
    quality: int | None = None  # operating point of the rule's model; None = codec.quality (its own model's)
    min_psnr_db: float | None = None
    max_abs_error: float | None = None
    max_compression_ratio: float | None = None


@dataclass
class CompressionSettings:
    """Deferred compression: C-STORE keeps a lossless copy and a job; workers compress per series later."""

    enabled: bool = True
    delay_s: float = 60.0  # seconds after a series' latest instance before its job is due
    serve_workers: int | None = None  # worker threads inside `serve`; None = 1 on SQLite, 0 on PostgreSQL
    lease_s: float = 600.0  # a claimed job not finished by then is reclaimed by another worker
    poll_s: float = 2.0
    max_attempts: int = 3  # a job that failed (or was abandoned) this often is marked failed
    series_per_claim: int = 4  # series claimed together so one batch can span series
    rules: list[CompressionRule] = field(default_factory=list)  # empty = [one rule from codec.modalities]

    def effective_rules(self, codec: CodecSettings) -> list[CompressionRule]:
        """The configured rules, or the default one: ``codec.modalities`` with the ``[codec]`` model."""
        return self.rules or [CompressionRule(name="default", modalities=list(codec.modalities))]


@dataclass
class Remote:
    """A C-MOVE destination, keyed by its AE title in :attr:`Settings.remotes`."""

    host: str
    port: int
    tls: bool = False  # open the C-MOVE sub-association to this remote over TLS (pacs_cae/net/tls.py)


@dataclass
class Settings:
    """Everything configurable, one section per concern."""

    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    codec: CodecSettings = field(default_factory=CodecSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    remotes: dict[str, Remote] = field(default_factory=dict)
    data_dir: str = DEFAULT_DATA_DIR
    log_level: str = "INFO"


_SECTIONS: dict[str, type] = {"server": ServerSettings, "database": DatabaseSettings, "codec": CodecSettings,
                              "compression": CompressionSettings}
_TOP_LEVEL = ("data_dir", "log_level")


def sqlite_path(url: str) -> Path | None:
    """The file behind ``sqlite:///path`` (None for in-memory or non-SQLite URLs)."""
    if not url.startswith("sqlite"):
        return None
    _, sep, rest = url.partition(":///")
    if not sep:
        return None
    path = rest.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def load_settings(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings: defaults < TOML file < ``PACS_CAE_<SECTION>_<KEY>`` environment < ``overrides``.

    ``path`` None falls back to ``$PACS_CAE_CONFIG`` if set, else no file. ``overrides`` uses dotted keys
    (``"server.port"``, ``"data_dir"``, ``"remotes.STORESCP"``); string values are converted like environment
    values. When no source sets ``database.url`` it follows ``data_dir`` (``sqlite:///<data_dir>/archive.db``).
    """
    raw: dict[str, Any] = {}
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is not None:
        _merge(raw, _read_toml(Path(path)), source=str(path))
    _merge(raw, _from_environment(os.environ), source="environment")
    if overrides:
        _merge(raw, _unflatten(overrides), source="overrides")
    return _build(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Collect the ``PACS_CAE_*`` variables that name a known key (unknown ones are ignored)."""
    raw: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f"{ENV_PREFIX}{section}_{f.name}".upper()
            if name in environ:
                raw.setdefault(section, {})[f.name] = environ[name]
    for key in _TOP_LEVEL:
        name = f"{ENV_PREFIX}{key}".upper()
        if name in environ:
            raw[key] = environ[name]
    if f"{ENV_PREFIX}REMOTES" in environ:
        raw["remotes"] = _parse_remotes_env(environ[f"{ENV_PREFIX}REMOTES"])
    return raw


def _parse_remotes_env(text: str) -> dict[str, Any]:
    """``"AET=host:port,AET2=host:port"`` -> ``{"AET": "host:port", ...}``."""
    remotes: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        aet, sep, address = item.partition("=")
        if not sep or not aet.strip():
            raise ConfigError(f"{ENV_PREFIX}REMOTES: expected AET=host:port, got {item!r}")
        remotes[aet.strip()] = address.strip()
    return remotes


def _unflatten(overrides: Mapping[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key, value in overrides.items():
        head, sep, tail = key.partition(".")
        if sep:
            raw.setdefault(head, {})[tail] = value
        else:
            raw[head] = value
    return raw


def _merge(into: dict[str, Any], new: Mapping[str, Any], *, source: str) -> None:
    """Merge ``new`` into ``into`` section by section, rejecting unknown keys with the source named."""
    for key, value in new.items():
        if key in _SECTIONS or key == "remotes":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{key}] must be a table")
            section = into.setdefault(key, {})
            if key in _SECTIONS:
                known = {f.name for f in dataclasses.fields(_SECTIONS[key])}
                unknown = set(value) - known
                if unknown:
                    raise ConfigError(f"{source}: unknown key(s) in [{key}]: {', '.join(sorted(unknown))}")
            section.update(value)
        elif key in _TOP_LEVEL:
            into[key] = value
        else:
            raise ConfigError(f"{source}: unknown key {key!r}")


def _build(raw: dict[str, Any]) -> Settings:
    settings = Settings()
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        hints = typing.get_type_hints(cls)
        kwargs = {name: _coerce(value, hints[name], f"{section}.{name}") for name, value in values.items()}
        setattr(settings, section, cls(**kwargs))
    for key in _TOP_LEVEL:
        if key in raw:
            setattr(settings, key, _coerce(raw[key], str, key))
    settings.remotes = {aet: _remote(aet, value) for aet, value in raw.get("remotes", {}).items()}
    if "url" not in raw.get("database", {}):
        settings.database.url = f"sqlite:///{Path(settings.data_dir).as_posix()}/archive.db"
    _validate(settings)
    return settings


def _remote(aet: str, value: Any) -> Remote:
    """A remote from a TOML table ``{host, port}`` or a ``"host:port"`` string."""
    where = f"remotes.{aet}"
    if isinstance(value, Remote):
        return value
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{where}: expected host:port, got {value!r}")
        return Remote(host=host, port=_coerce(port, int, where + ".port"))
    if isinstance(value, Mapping):
        unknown = set(value) - {"host", "port", "tls"}
        if unknown or "host" not in value or "port" not in value:
            raise ConfigError(f"{where}: expected {{ host = ..., port = ..., tls = false }}, "
                              f"got {dict(value)!r}")
        return Remote(host=str(value["host"]), port=_coerce(value["port"], int, where + ".port"),
                      tls=_coerce(value.get("tls", False), bool, where + ".tls"))
    raise ConfigError(f"{where}: expected a table or 'host:port', got {value!r}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a TOML/env/override value to the field's declared type (strings are parsed)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return _coerce(value, args[0], key)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, key) for v in value]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _coerce_table(value, hint, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        try:
            return hint(str(value).strip())
        except ValueError:
            raise ConfigError(f"{key} must be one of {tuple(str(m) for m in hint)}, got {value!r}") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _coerce_table(value: Any, cls: type, key: str) -> Any:
    """A TOML table (e.g. one ``[[compression.rules]]``) as the dataclass ``cls``, unknown keys rejected."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table, got {value!r}")
    hints = typing.get_type_hints(cls)
    unknown = set(value) - set(hints)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s): {', '.join(sorted(unknown))}")
    return cls(**{name: _coerce(v, hints[name], f"{key}.{name}") for name, v in value.items()})


def _validate(s: Settings) -> None:
    """Reject values that would only fail later, far from the configuration that caused them."""
    checks: list[tuple[bool, str]] = [
        (0 < s.server.port < 65536, f"server.port must be 1..65535, got {s.server.port}"),
        (1 <= len(s.server.ae_title.strip()) <= 16, "server.ae_title must be 1..16 characters"),
        (s.server.processes >= 0, "server.processes must be >= 0 (0 = one per CPU core)"),
        (s.server.max_associations >= 1, "server.max_associations must be >= 1"),
        (s.server.max_associations_per_address >= 1, "server.max_associations_per_address must be >= 1"),
        (s.server.max_pending_connections >= 1, "server.max_pending_connections must be >= 1"),
        (s.server.max_pending_per_address >= 1, "server.max_pending_per_address must be >= 1"),
        (s.server.association_request_timeout_s > 0, "server.association_request_timeout_s must be > 0"),
        (s.server.idle_timeout_s > 0, "server.idle_timeout_s must be > 0"),
        (4096 <= s.server.max_pdu_size <= 16 * 1024 * 1024, "server.max_pdu_size must be 4096..16777216"),
        (s.server.max_dataset_bytes >= s.server.max_pdu_size,
         "server.max_dataset_bytes must be >= server.max_pdu_size"),
        (set(s.server.patient_identity_attributes) <= set(PATIENT_IDENTITY_ATTRIBUTES),
         (f"server.patient_identity_attributes must be among {PATIENT_IDENTITY_ATTRIBUTES}, "
          f"got {s.server.patient_identity_attributes}")),
        (s.codec.device in ("auto", "cpu", "cuda") or s.codec.device.startswith("cuda:"),
         f"codec.device must be auto, cpu, cuda or cuda:N, got {s.codec.device!r}"),
        (0 <= s.codec.brotli_quality <= 11, "codec.brotli_quality must be 0..11"),
        (s.codec.quality is None or s.codec.quality >= 1, "codec.quality must be >= 1 (or unset)"),
        (s.codec.batch_size >= 0, "codec.batch_size must be >= 0 (0 = per device)"),
        (s.codec.batch_wait_ms >= 0, "codec.batch_wait_ms must be >= 0"),
        (0 < s.codec.min_rows <= s.codec.max_rows, "codec.min_rows must be in 1..max_rows"),
        (0 < s.codec.min_columns <= s.codec.max_columns, "codec.min_columns must be in 1..max_columns"),
        (s.log_level.upper() in LOG_LEVELS, f"log_level must be one of {LOG_LEVELS}, got {s.log_level!r}"),
        (bool(s.database.url), "database.url must not be empty"),
        (s.database.sqlite_synchronous.strip().upper() in ("NORMAL", "FULL", "EXTRA"),
         f"database.sqlite_synchronous must be normal, full or extra, got {s.database.sqlite_synchronous!r}"),
        # TLS: a key or CA bundle without a certificate would silently leave the port on plain TCP.
        (bool(s.server.tls_certificate) or not s.server.tls_private_key,
         "server.tls_private_key is set but server.tls_certificate is not"),
        (bool(s.server.tls_certificate) or not s.server.tls_ca_certificates,
         "server.tls_ca_certificates (mutual TLS) needs server.tls_certificate"),
    ]
    for key in ("tls_certificate", "tls_private_key", "tls_ca_certificates"):  # TLS files must exist
        tls_file = getattr(s.server, key)
        checks.append((not tls_file or Path(tls_file).is_file(), f"server.{key}: no such file {tls_file!r}"))
    for remote_aet, remote in s.remotes.items():
        checks.append((0 < remote.port < 65536, f"remotes.{remote_aet}.port must be 1..65535"))
    c = s.compression
    checks += [
        (c.delay_s >= 0, "compression.delay_s must be >= 0"),
        (c.serve_workers is None or c.serve_workers >= 0, "compression.serve_workers must be >= 0"),
        (c.lease_s > 0, "compression.lease_s must be > 0"),
        (c.poll_s > 0, "compression.poll_s must be > 0"),
        (c.max_attempts >= 1, "compression.max_attempts must be >= 1"),
        (c.series_per_claim >= 1, "compression.series_per_claim must be >= 1"),
    ]
    checks += [
        (s.codec.max_abs_error is None or s.codec.max_abs_error >= 0, "codec.max_abs_error must be >= 0 (or unset)"),
        (set(s.codec.lossless_methods) <= set(LOSSLESS_METHODS),
         f"codec.lossless_methods must be among {LOSSLESS_METHODS}, got {s.codec.lossless_methods}"),
    ]
    for rule in c.rules:
        checks += [
            (rule.quality is None or rule.quality >= 1, f"compression.rules.{rule.name}.quality must be >= 1"),
            (rule.max_abs_error is None or rule.max_abs_error >= 0,
             f"compression.rules.{rule.name}.max_abs_error must be >= 0"),
        ]
    names = [rule.name for rule in c.rules]
    checks.append((len(names) == len(set(names)), "compression.rules: rule names must be unique"))
    checks += [(not (rule.name.startswith("(") and rule.name.endswith(")")),
                f"compression.rules: {rule.name!r} is reserved (a name in parentheses names a built-in job)")
               for rule in c.rules]
    checks += [(rule.after_days >= 0, f"compression.rules.{rule.name}.after_days must be >= 0") for rule in c.rules]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    for rule in c.rules:
        rule.modalities = [m.upper() for m in rule.modalities]
    s.log_level = s.log_level.upper()
    s.codec.modalities = [m.upper() for m in s.codec.modalities]
    s.codec.lossless_methods = [m.strip().lower() for m in s.codec.lossless_methods]
