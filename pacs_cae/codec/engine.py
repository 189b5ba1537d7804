"""The ``Codec``: slices -> blobs and back, with one loaded model on one device.

Pipeline per slice: per-slice min/max normalisation and padding (``normalize``), CAE encoder, Eq. 2
quantization (``quant``), Brotli, versioned container (``container``); decode runs it backwards and refuses
blobs made by other weights. This module registers the ``cae-paper`` family (``families``).

Execution modes (``mode=``). ``benchmarks/codec_speed.py`` measures each end to end; the README's
"Benchmarks" table has the figures (512x512, this project's 2-core AVX-512-BF16 CPU: bf16 3.9x fp32 on
encode, 2.9x on decode):

* ``"fp32"`` -- float32, NCHW: the correctness reference.
* ``"channels_last"`` -- float32 in NHWC layout, same precision, 1.7-2.1x fp32 here.
* ``"bf16"`` -- bfloat16 autocast on channels_last, the fastest on CPUs with native bfloat16. Its
  reconstructions differ from fp32's by a PSNR of ~63 dB (12-bit slices), far below the codec's own error, so
  the cost in quality is negligible.
* ``"fp64"`` -- float64, slow; makes blobs reproducible bit-for-bit across CPUs/GPUs (used by the
  pinned-bitstream test, whose hash would otherwise depend on the machine's convolution kernels).
* ``"auto"`` (default) -- ``bf16`` on CPUs with native bfloat16 (AVX512-BF16/AMX, where it measured fastest),
  else ``channels_last`` (emulated bf16 is slower than fp32); on CUDA ``channels_last`` (cuDNN uses TF32).

Blobs are byte-identical for the same input, model, device, mode and batch size. A different batch size may
change the last bits of the stored latent min/max (the kernels differ); every such blob decodes correctly.

Brotli quality 5 is the default: on the latent codes of held-out 512x512 brain slices quality 11 took ~120x
longer (154 ms against 1.3 ms, more than the bf16 network itself) for a blob only ~3 % smaller (docs/codec.md).
A site that prefers storage over ingest CPU sets ``brotli_quality=11``; decoding speed does not depend on it.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypeVar, cast

import brotli
import numpy as np
import torch

from .base import PerSlice, SliceCodec
from .container import BlobHeader, codes_from_payload, codes_to_payload_order, pack_blob, unpack_blob
from .device import resolve_device
from .errors import CodecError, CorruptBlobError, ModelMismatchError
from .families import family, register_model
from .model import ARCHITECTURE, DOWNSCALE, ConvAutoencoder
from .normalize import NormalizedSlice, normalize_slice, restore_slice
from .quant import dequantize, quantize
from .weights import ModelCard, cae_network, load_checked, read_card

Mode = Literal["auto", "fp32", "channels_last", "bf16", "fp64"]
MODES: tuple[str, ...] = ("fp32", "channels_last", "bf16", "fp64")
DEFAULT_MODE: Mode = "auto"
DEFAULT_BROTLI_QUALITY = 5
DEFAULT_MAX_BATCH = 8
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


class Codec:
    """One model on one device.

    Thread-safe: network calls are serialised by a lock; normalisation and Brotli run in the callers' threads.
    """

    def __init__(
        self,
        network: ConvAutoencoder,
        *,
        model_id: str,
        weights_sha256: str,
        device: str | torch.device = "auto",
        mode: Mode = DEFAULT_MODE,
        brotli_quality: int = DEFAULT_BROTLI_QUALITY,
        max_batch: int = DEFAULT_MAX_BATCH,
        card: ModelCard | None = None,
    ) -> None:
        if mode != "auto" and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose auto or one of {MODES}")
        if not 0 <= brotli_quality <= 11:
            raise ValueError(f"brotli_quality must be 0..11, got {brotli_quality}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.device = resolve_device(device)
        self.mode: Mode = resolve_mode(mode, self.device)
        self.brotli_quality = brotli_quality
        self.max_batch = max_batch
        self.card = card
        self.model = place_in_mode(network, self.device, self.mode)
        convs = [m for m in network.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
        self._latent_channels = convs[-1].out_channels
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Codec({self.model_id!r}, device={self.device}, mode={self.mode!r})"

    # ------------------------------------------------------------------ encode
    #: Operating points a ``quality`` can pick; ``None``: the paper's CAE has exactly one.
    qualities: int | None = None
    #: The paper's CAE cannot bound the error of a pixel (the mshp family can: ``RDCodec``).
    supports_max_abs_error = False

    def check_max_abs_error(self, delta: int | None) -> int | None:
        """``None`` only: this model has no error bound (``CodecError`` otherwise)."""
        if delta is not None:
            raise CodecError(f"model {self.model_id!r} cannot bound the pixel error: max_abs_error does not "
                             "apply (models that can: the mshp family, supports_max_abs_error)")
        return None

    def encode(
        self,
        slices: Sequence[np.ndarray],
        *,
        bits_stored: PerSlice = None,
        quality: PerSlice = None,
        max_abs_error: PerSlice = None,
    ) -> list[bytes]:
        """Encode 2-D integer slices (any size) into self-describing blobs, in input order.

        ``bits_stored`` bounds the values on decode (default: the dtype's full width); one value for all
        slices or one per slice. ``quality`` and ``max_abs_error`` must be ``None``: this model has a single
        operating point and no error bound.
        """
        for delta in _per_item(max_abs_error, len(slices)):
            self.check_max_abs_error(delta)
        if any(q is not None for q in _per_item(quality, len(slices))):
            raise CodecError(f"model {self.model_id!r} has a single operating point: quality does not apply "
                             "(variable-rate models: the mshp family)")
        bits = _per_item(bits_stored, len(slices))
        prepared = [normalize_slice(s, b, DOWNSCALE) for s, b in zip(slices, bits)]
        blobs: list[bytes] = [b""] * len(prepared)
        for indices in self._batches(p.data.shape for p in prepared):
            batch = np.stack([prepared[i].data for i in indices])[:, None]
            q = quantize(self._run(self.model.encoder, torch.from_numpy(batch)))
            codes = q.codes.cpu().numpy()
            lows, highs = q.minimum.cpu().tolist(), q.maximum.cpu().tolist()
            for j, i in enumerate(indices):
                blobs[i] = self._pack(prepared[i], codes[j], lows[j], highs[j])
        return blobs

    def _pack(self, item: NormalizedSlice, codes: np.ndarray, low: float, high: float) -> bytes:
        header = BlobHeader(
            model_id=self.model_id,
            weights_sha256=self.weights_sha256,
            latent_shape=tuple(int(n) for n in codes.shape),  # type: ignore[arg-type]
            latent_min=low,
            latent_max=high,
            rows=item.rows,
            columns=item.columns,
            pad_bottom=item.pad_bottom,
            pad_right=item.pad_right,
            dtype=item.dtype.name,
            pixel_representation=item.pixel_representation,
            bits_stored=item.bits_stored,
            value_min=item.value_min,
            value_max=item.value_max,
            brotli_quality=self.brotli_quality,
        )
        payload = brotli.compress(np.ascontiguousarray(codes_to_payload_order(codes)).tobytes(),
                                  quality=self.brotli_quality)
        return pack_blob(header, payload)

    # ------------------------------------------------------------------ decode
    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode blobs made by this exact model into slices of their original shape and dtype.

        Raises ``CorruptBlobError`` for damaged blobs and ``ModelMismatchError`` for blobs of other weights.
        """
        parsed = [self._unpack(blob) for blob in blobs]
        out: list[np.ndarray] = [np.empty(0)] * len(parsed)
        for indices in self._batches(h.latent_shape for h, _ in parsed):
            codes = torch.from_numpy(np.stack([parsed[i][1] for i in indices]))
            lows = torch.tensor([parsed[i][0].latent_min for i in indices], dtype=torch.float32)
            highs = torch.tensor([parsed[i][0].latent_max for i in indices], dtype=torch.float32)
            latent = dequantize(codes.to(self.device), lows, highs)
            images = self._run(self.model.decoder, latent)[:, 0].float().cpu().numpy()
            for j, i in enumerate(indices):
                h = parsed[i][0]
                out[i] = restore_slice(
                    images[j], rows=h.rows, columns=h.columns, dtype=h.dtype, bits_stored=h.bits_stored,
                    value_min=h.value_min, value_max=h.value_max,
                )
        return out

    def _unpack(self, blob: bytes) -> tuple[BlobHeader, np.ndarray]:
        header, payload = unpack_blob(blob)
        if header.model_id != self.model_id or header.weights_sha256 != self.weights_sha256:
            raise ModelMismatchError(
                header.model_id, header.weights_sha256, self.model_id, self.weights_sha256
            )
        c, h, w = header.latent_shape
        if (h * DOWNSCALE, w * DOWNSCALE) != header.padded_shape or c != self._latent_channels:
            raise CorruptBlobError(
                f"latent shape {header.latent_shape} does not match geometry {header.padded_shape}"
            )
        try:
            raw = brotli.decompress(payload)
        except brotli.error as exc:
            raise CorruptBlobError(f"blob payload is not valid Brotli data: {exc}") from exc
        if len(raw) != c * h * w:
            raise CorruptBlobError(f"blob payload has {len(raw)} codes, its header says {c * h * w}")
        return header, np.ascontiguousarray(codes_from_payload(raw, header))

    # ------------------------------------------------------------------ helpers
    def _batches(self, shapes: Iterator[tuple[int, ...]]) -> Iterator[list[int]]:
        return batches_by_shape(shapes, self.max_batch)

    def _run(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return run_in_mode(module, x, self.device, self.mode)


def mode_dtype(mode: Mode) -> torch.dtype:
    return torch.float64 if mode == "fp64" else torch.float32


def mode_memory_format(mode: Mode) -> torch.memory_format:
    return torch.contiguous_format if mode in ("fp32", "fp64") else torch.channels_last


def place_in_mode(module: ModuleT, device: torch.device, mode: Mode) -> ModuleT:
    """``module`` on ``device`` in the mode's dtype and memory layout, in eval mode."""
    module = module.to(device, mode_dtype(mode))
    # torch's Module.to overloads leave out memory_format, which it accepts
    return module.to(memory_format=mode_memory_format(mode)).eval()  # type: ignore[call-overload]


def run_in_mode(module: Callable[..., torch.Tensor], x: torch.Tensor, device: torch.device, mode: Mode,
                *args: torch.Tensor) -> torch.Tensor:
    """``module(x, *args)`` in the execution mode (dtype, layout, bf16 autocast), returned as float32."""
    x = x.to(device, mode_dtype(mode)).contiguous(memory_format=mode_memory_format(mode))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return module(x, *args).float()


def batches_by_shape(shapes: Iterable[tuple[int, ...]], max_batch: int) -> Iterator[list[int]]:
    """Indices grouped by equal shape (tensors must stack), in chunks of ``max_batch``."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, shape in enumerate(shapes):
        groups[tuple(shape)].append(i)
    for members in groups.values():
        for start in range(0, len(members), max_batch):
            yield members[start : start + max_batch]


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bfloat16 natively here (AVX512-BF16 / AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_mode(mode: Mode, device: torch.device) -> Mode:
    """``auto``: bf16 on CPUs with native bfloat16, else channels_last (also on CUDA: cuDNN uses TF32)."""
    if mode != "auto":
        return mode
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "channels_last"


def _per_item(value: PerSlice, count: int) -> list[int | None]:
    """One value (or None) for every slice, from one value or a per-slice sequence."""
    if value is None or isinstance(value, (int, np.integer)):
        return [None if value is None else int(value)] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"got {len(values)} per-slice values for {count} slices")
    return values


def load_codec(
    model: str | Path = "cae-paper",
    device: str | torch.device = "auto",
    models_dir: str | Path | None = None,
    *,
    mode: Mode = DEFAULT_MODE,
    brotli_quality: int = DEFAULT_BROTLI_QUALITY,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> SliceCodec:
    """Load ``<models_dir>/<model>/`` (or the model directory ``model`` points at) into the codec of the family
    its card names (:mod:`pacs_cae.codec.families`): a ``Codec`` for the paper's CAE, an ``RDCodec``
    (``codec.rd``) for the rate-distortion family.

    Raises ``UnknownModelError`` (naming the id and the directory searched) when the model is absent and
    ``WeightsIntegrityError`` when the weights do not match their card's sha256.
    """
    loader = family(read_card(model, models_dir).architecture)
    tensors, card = load_checked(model, models_dir)
    return loader(tensors, card, device=device, mode=mode, brotli_quality=brotli_quality, max_batch=max_batch)


@register_model(ARCHITECTURE)
def cae_codec_from_tensors(tensors: dict[str, torch.Tensor], card: ModelCard, *, device: str | torch.device,
                           mode: str, brotli_quality: int, max_batch: int) -> Codec:
    """A ``Codec`` (the paper's CAE) from a hash-checked weights file's tensors and its card."""
    return Codec(cae_network(tensors, card), model_id=card.model_id, weights_sha256=card.sha256, device=device,
                 mode=cast(Mode, mode), brotli_quality=brotli_quality, max_batch=max_batch, card=card)
