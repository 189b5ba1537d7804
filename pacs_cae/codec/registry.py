"""``CodecRegistry``: every model the archive still references, loaded on first use and kept.

Old blobs name the model that made them; the registry decodes each blob with exactly that model, so a new
default model never makes stored data unreadable.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import SliceCodec
from .container import read_header
from .device import forward_batch, resolve_device
from .engine import DEFAULT_BROTLI_QUALITY, DEFAULT_MAX_BATCH, DEFAULT_MODE, Mode, load_codec


class CodecRegistry:
    """Thread-safe cache of ``Codec`` objects by model id, all on one device and mode.

    ``max_batch``: slices per forward; 0 = the device's (:func:`~pacs_cae.codec.device.forward_batch`).
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        device: str | torch.device = "auto",
        brotli_quality: int = DEFAULT_BROTLI_QUALITY,
        *,
        mode: Mode = DEFAULT_MODE,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.brotli_quality = brotli_quality
        self.mode = mode
        self.max_batch = max_batch
        self._codecs: dict[str, SliceCodec] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str) -> SliceCodec:
        """The codec for ``model_id``, loading it once (raises ``UnknownModelError`` if absent)."""
        with self._lock:
            codec = self._codecs.get(model_id)
            if codec is None:
                device = resolve_device(self.device)
                codec = load_codec(
                    model_id, device, self.models_dir, mode=self.mode,
                    brotli_quality=self.brotli_quality, max_batch=forward_batch(self.max_batch, device),
                )
                self._codecs[model_id] = codec
            return codec

    def use(self, codec: SliceCodec) -> SliceCodec | None:
        """Decode ``codec``'s model with ``codec`` (e.g. a ``BatchingCodec`` over the configured model) until
        :meth:`release`; returns the codec it replaces."""
        with self._lock:
            previous = self._codecs.get(codec.model_id)
            self._codecs[codec.model_id] = codec
            return previous

    def release(self, codec: SliceCodec, previous: SliceCodec | None) -> None:
        """Undo :meth:`use` (when ``codec`` is still the one in use): back to ``previous``, or load on demand."""
        with self._lock:
            if self._codecs.get(codec.model_id) is codec:
                if previous is None:
                    del self._codecs[codec.model_id]
                else:
                    self._codecs[codec.model_id] = previous

    def loaded(self) -> list[str]:
        """Ids of the models loaded so far."""
        with self._lock:
            return sorted(self._codecs)

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode blobs of any mix of models, each with the model it names, in input order."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, blob in enumerate(blobs):
            by_model[read_header(blob).model_id].append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(blobs)
        for model_id, indices in by_model.items():
            decoded = self.get(model_id).decode([blobs[i] for i in indices])
            for i, array in zip(indices, decoded):
                out[i] = array
        return out
