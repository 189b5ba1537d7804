"""Model directories: ``<models_dir>/<model_id>/model.safetensors`` + ``card.json``.

The card names the architecture and the sha256 of the exact weights file; loading verifies the hash, and that
hash is what every blob records, so a blob can never be decoded by other weights unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import CodecError, UnknownModelError, WeightsIntegrityError
from .model import ConvAutoencoder, build_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
MODELS_DIR_ENV = "PACS_CAE_MODELS_DIR"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModelCard:
    """The JSON card beside the weights. ``extra`` keeps any other keys (training data, PSNR, ...)."""

    model_id: str
    architecture: str
    sha256: str
    trained: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data.update(data.pop("extra"))
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        known = {k: data.pop(k) for k in ("model_id", "architecture", "sha256", "trained")}
        return cls(**known, extra=data)


#: Where a (non-editable) install puts the shipped models: ``[tool.setuptools.data-files]`` in pyproject.toml.
INSTALLED_MODELS = Path("share") / "pacs-cae" / "models"


def default_models_dir() -> Path:
    """Where model ids are looked up when ``codec.models_dir`` (``--models-dir``) is unset.

    ``$PACS_CAE_MODELS_DIR`` if set; else the ``models/`` folder of the checkout the package runs from (an
    editable install, the repository); else the shipped models a wheel install put under the environment's
    data directory (``<venv>/share/pacs-cae/models``).
    """
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "models"
    if checkout.is_dir():
        return checkout
    return Path(sysconfig.get_path("data")) / INSTALLED_MODELS


def validate_model_id(model_id: str) -> str:
    """Model ids are directory names and go into every blob: short, ASCII, no path separators."""
    if not _MODEL_ID.match(model_id):
        raise CodecError(f"invalid model id {model_id!r}: use letters, digits, '.', '_' and '-' (max 128)")
    return model_id


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_dir(model: str | Path, models_dir: str | Path | None = None) -> Path:
    """A model id under ``models_dir`` (default :func:`default_models_dir`), or an explicit directory path."""
    candidate = Path(model)
    if isinstance(model, Path) or os.sep in str(model) or (os.altsep and os.altsep in str(model)):
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / CARD_FILE).is_file():
            return candidate
        raise UnknownModelError(str(model), candidate, f"needs {WEIGHTS_FILE} and {CARD_FILE}")
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    directory = base / validate_model_id(str(model))
    if not ((directory / WEIGHTS_FILE).is_file() and (directory / CARD_FILE).is_file()):
        raise UnknownModelError(str(model), directory, f"needs {WEIGHTS_FILE} and {CARD_FILE}")
    return directory


def available_models(models_dir: str | Path | None = None) -> list[str]:
    """Model ids present under ``models_dir`` (directories with weights and a card)."""
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if (p / WEIGHTS_FILE).is_file() and (p / CARD_FILE).is_file()
    )


def read_card(model: str | Path, models_dir: str | Path | None = None) -> ModelCard:
    """The card of a model directory (not hash-checked: use :func:`load_checked` for the weights)."""
    card = ModelCard.from_json((resolve_model_dir(model, models_dir) / CARD_FILE).read_text())
    validate_model_id(card.model_id)
    return card


def load_checked(model: str | Path, models_dir: str | Path | None = None) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """The tensors of a model directory after checking them against the card's sha256, and the card."""
    directory = resolve_model_dir(model, models_dir)
    card = read_card(directory)
    actual = sha256_file(directory / WEIGHTS_FILE)
    if actual != card.sha256:
        raise WeightsIntegrityError(
            f"model {card.model_id!r}: {directory / WEIGHTS_FILE} has sha256 {actual}, "
            f"its card says {card.sha256}"
        )
    return load_file(directory / WEIGHTS_FILE), card


def load_model(model: str | Path, models_dir: str | Path | None = None) -> tuple[ConvAutoencoder, ModelCard]:
    """Load and hash-check a CAE model directory; returns the float32 network (eval mode, CPU) and its card."""
    tensors, card = load_checked(model, models_dir)
    return cae_network(tensors, card), card


def cae_network(tensors: dict[str, torch.Tensor], card: ModelCard) -> ConvAutoencoder:
    """The paper's CAE (float32, eval mode, CPU) holding a weights file's tensors."""
    try:
        network = build_model(card.architecture)
    except KeyError as exc:
        raise CodecError(f"model {card.model_id!r}: {exc.args[0]}") from exc
    network.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    return network.eval()


def save_model(
    network: torch.nn.Module,
    directory: str | Path,
    *,
    model_id: str,
    architecture: str = "cae-paper",
    trained: bool,
    weights_dtype: torch.dtype = torch.float32,
    tensors: dict[str, torch.Tensor] | None = None,
    **extra: Any,
) -> ModelCard:
    """Write ``model.safetensors`` + ``card.json`` (with the file's sha256) into ``directory``.

    ``tensors`` are stored as they are beside the network's state (e.g. the integer entropy tables).
    """
    validate_model_id(model_id)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", weights_dtype).contiguous() for k, v in network.state_dict().items()}
    state.update({k: v.detach().cpu().contiguous() for k, v in (tensors or {}).items()})
    # One metadata key: safetensors writes a multi-key metadata map in hash order, so the same weights
    # would get a different file (and sha256) on every save.
    save_file(state, directory / WEIGHTS_FILE,
              metadata={"pacs_cae": json.dumps({"architecture": architecture, "model_id": model_id},
                                               sort_keys=True)})
    extra = {"weights_dtype": str(weights_dtype).removeprefix("torch."), **extra}
    card = ModelCard(model_id, architecture, sha256_file(directory / WEIGHTS_FILE), trained, extra)
    (directory / CARD_FILE).write_text(card.to_json())
    return card


def initial_model(seed: int = 0, architecture: str = "cae-paper") -> ConvAutoencoder:
    """The deterministic untrained network (PyTorch default init under ``torch.manual_seed(seed)``)."""
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build_model(architecture)
    finally:
        torch.random.set_rng_state(generator_state)
