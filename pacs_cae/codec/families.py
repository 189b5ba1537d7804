"""The registry of model families: a model card's ``architecture`` names the loader that builds its codec.

A family registers itself with :func:`register_model` (as CompressAI's ``register_model`` and pydicom's encoder
plugins do), so :func:`pacs_cae.codec.load_codec` needs no list of families. The built-in families
(``cae-paper`` in :mod:`pacs_cae.codec.engine`, ``mshp`` in :mod:`pacs_cae.codec.rd.codec`) are imported on
the first lookup, so importing the codec does not load every family's dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from .errors import CodecError

if TYPE_CHECKING:
    import torch

    from .base import SliceCodec
    from .weights import ModelCard

#: Modules that register the built-in families when imported.
BUILTIN_FAMILIES = ("pacs_cae.codec.engine", "pacs_cae.codec.rd.codec")


class FamilyLoader(Protocol):
    """Builds a family's codec from a hash-checked weights file's tensors and its card."""

    def __call__(self, tensors: dict[str, torch.Tensor], card: ModelCard, *, device: str | torch.device,
                 mode: str, brotli_quality: int, max_batch: int) -> SliceCodec: ...


LoaderT = TypeVar("LoaderT", bound=FamilyLoader)
_FAMILIES: dict[str, FamilyLoader] = {}


def register_model(architecture: str) -> Callable[[LoaderT], LoaderT]:
    """Decorator: ``loader`` builds the codec of every model whose card names ``architecture``."""

    def register(loader: LoaderT) -> LoaderT:
        if _FAMILIES.get(architecture, loader) is not loader:
            raise ValueError(f"model family {architecture!r} is registered twice")
        _FAMILIES[architecture] = loader
        return loader

    return register


def _load_builtin() -> None:
    for module in BUILTIN_FAMILIES:
        importlib.import_module(module)


def family(architecture: str) -> FamilyLoader:
    """The loader registered for ``architecture``; ``CodecError`` naming the known ones if there is none."""
    if architecture not in _FAMILIES:
        _load_builtin()
    try:
        return _FAMILIES[architecture]
    except KeyError:
        raise CodecError(f"unknown architecture {architecture!r}; known: {architectures()}") from None


def architectures() -> list[str]:
    """Every registered family."""
    _load_builtin()
    return sorted(_FAMILIES)


__all__ = ["BUILTIN_FAMILIES", "FamilyLoader", "architectures", "family", "register_model"]
