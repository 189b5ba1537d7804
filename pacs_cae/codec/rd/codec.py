"""``RDCodec``: slices <-> version-3 blobs with the mean-scale hyperprior, at a chosen ``quality``.

Encode: per-slice min/max normalisation and edge padding to a multiple of 64 (``codec.normalize``), analysis with
the quality's gain, hyper-analysis, rounding, then ANS coding of ``z`` (factorized tables) and of ``y - mu``
(Gaussian tables chosen by the predicted scale). Decode runs it backwards.

Exactness across machines and modes: the main transforms (``g_a``, ``h_a``, ``g_s``) run in the codec's mode
(fp32 / channels_last / bf16 / fp64, see ``engine``), but everything that decides a probability -- ``h_s``, the
scales and their table index, the means -- runs in float64 on the CPU, one slice at a time, on integer inputs,
and the probabilities themselves are integer tables from the weights file (``tables``). So a blob encoded in any
mode decodes in any other mode and thread count to the bit-identical latent (symbols and float64 means). The
pixels then differ only as the synthesis transform's float arithmetic does: between float32 modes and thread
counts a rare pixel by one stored level (a value that lands on a rounding boundary), with bf16 more (it caps the
reconstruction, so ``auto`` never picks it for this family) -- measured in ``tests/codec/test_rd_codec.py``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from ..container import RDBlobHeader, pack_rd_blob, read_header, unpack_rd_blob
from ..device import resolve_device
from ..engine import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MODE,
    MODES,
    Mode,
    _per_item,
    batches_by_shape,
    place_in_mode,
    resolve_mode,
    run_in_mode,
)
from ..errors import CodecError, CorruptBlobError, ModelMismatchError
from ..families import register_model
from ..normalize import NormalizedSlice, normalize_slice, restore_slice
from ..weights import ModelCard
from . import residual
from .coder import TableCoder, Uniform, new_coder
from .network import DOWNSCALE, MeanScaleHyperprior, entropy_parameters
from .tables import Tables, scale_table

#: y's stride relative to the slice (z's is DOWNSCALE).
Y_STRIDE = 16


class EntropyModels:
    """The integer tables of one model, with their constriction models built once."""

    def __init__(self, gaussian: Tables, hyper: Tables, scales: np.ndarray) -> None:
        self.gaussian = TableCoder(gaussian)
        self.hyper = TableCoder(hyper)
        self.scales = np.asarray(scales, dtype=np.float64)

    def scale_index(self, scales: np.ndarray) -> np.ndarray:
        """The first table whose scale is >= the predicted one (the last for larger ones)."""
        return np.minimum(np.searchsorted(self.scales, scales, side="left"), self.scales.size - 1)


@dataclass(frozen=True)
class OperatingPoint:
    """What one ``quality`` means: a gain level of the network, optionally a residual layer's PSNR target."""

    gain_level: int  # 1..network qualities
    residual_db: float | None = None  # None: learned layer only

    @classmethod
    def parse(cls, item: dict) -> OperatingPoint:
        return cls(int(item["gain_level"]), None if item.get("residual_db") is None else float(item["residual_db"]))


class RDCodec:
    """One rate-distortion model on one device; ``quality`` 1..``qualities`` picks the operating point."""

    def __init__(
        self,
        network: MeanScaleHyperprior,
        entropy: EntropyModels,
        *,
        model_id: str,
        weights_sha256: str,
        device: str | torch.device = "auto",
        mode: Mode = DEFAULT_MODE,
        max_batch: int = DEFAULT_MAX_BATCH,
        operating_points: Sequence[OperatingPoint] | None = None,
        default_quality: int | None = None,
        card: ModelCard | None = None,
    ) -> None:
        if mode != "auto" and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose auto or one of {MODES}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model_id = model_id
        self.weights_sha256 = weights_sha256
        self.device = resolve_device(device)
        self.mode: Mode = resolve_mode(mode, self.device) if mode == "auto" else mode
        if mode == "auto" and self.mode == "bf16":
            self.mode = "channels_last"  # bf16 caps the reconstruction: never the default for this family
        self.max_batch = max_batch
        self.card = card
        levels = network.config.qualities
        self.points = list(operating_points or [OperatingPoint(g) for g in range(1, levels + 1)])
        if not self.points or any(not 1 <= p.gain_level <= levels for p in self.points):
            raise CodecError(f"model {model_id!r}: operating points must use gain levels 1..{levels}")
        self.qualities = len(self.points)
        self.default_quality = default_quality or self.qualities
        self.entropy = entropy
        self._table_choice = Uniform(entropy.scales.size)  # the residual layer's per-block table map
        # the probability path: float64, CPU, whatever the mode of the transforms
        self._h_s = copy.deepcopy(network.h_s).to("cpu", torch.float64).eval()
        self.model = place_in_mode(network, self.device, self.mode)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RDCodec({self.model_id!r}, device={self.device}, mode={self.mode!r})"

    # ------------------------------------------------------------------ public API
    def encode(
        self,
        slices: Sequence[np.ndarray],
        *,
        bits_stored: int | Sequence[int | None] | None = None,
        quality: int | Sequence[int | None] | None = None,
    ) -> list[bytes]:
        """Encode 2-D integer slices (any size, 8-16 bit, signed or not) at ``quality`` (default: the card's)."""
        bits = _per_item(bits_stored, len(slices))
        levels = [self.check_quality(q) for q in _per_item(quality, len(slices))]
        prepared = [normalize_slice(s, b, DOWNSCALE) for s, b in zip(slices, bits)]
        blobs: list[bytes] = [b""] * len(prepared)
        for indices in batches_by_shape((p.data.shape for p in prepared), self.max_batch):
            x = torch.from_numpy(np.stack([prepared[i].data for i in indices])[:, None])
            gains = torch.tensor([self.points[levels[i] - 1].gain_level - 1 for i in indices])
            with self._lock:
                y = run_in_mode(self.model.analysis, x, self.device, self.mode, gains.to(self.device))
                z = run_in_mode(self.model.h_a, y, self.device, self.mode)
            y64, z64 = y.cpu().double(), torch.round(z.cpu().double())
            latents = [self._latent_symbols(y64[j : j + 1], z64[j : j + 1]) for j in range(len(indices))]
            refine = [j for j, i in enumerate(indices) if self.points[levels[i] - 1].residual_db is not None]
            x_hat = self._reconstruct([prepared[indices[j]] for j in refine],
                                      [latents[j][3] for j in refine], gains[refine]) if refine else []
            residual_of = dict(zip(refine, x_hat))
            for j, i in enumerate(indices):
                blobs[i] = self._pack(prepared[i], np.asarray(slices[i]), levels[i], latents[j],
                                      residual_of.get(j))
        return blobs

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode blobs made by this exact model into slices of their original shape and dtype.

        Raises ``CorruptBlobError`` for damaged blobs and ``ModelMismatchError`` for blobs of other weights.
        """
        parsed = [self._decode_latent(blob) for blob in blobs]
        out: list[np.ndarray] = [np.empty(0)] * len(parsed)
        for indices in batches_by_shape((p[1].shape for p in parsed), self.max_batch):
            headers = [parsed[i][0] for i in indices]
            gains = torch.tensor([h.gain_level - 1 for h in headers])
            x_hat = self._reconstruct(headers, [parsed[i][1] for i in indices], gains)
            for j, i in enumerate(indices):
                header, _, coder, overflow = parsed[i]
                out[i] = self._refine(header, x_hat[j], coder, overflow)
        return out

    def check_quality(self, quality: int | None) -> int:
        """The quality to use (``None``: the default); raises ``CodecError`` outside 1..qualities."""
        if quality is None:
            return self.default_quality
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not (
                1 <= int(quality) <= self.qualities):
            raise CodecError(f"model {self.model_id!r}: quality must be an integer 1..{self.qualities}, "
                             f"got {quality!r}")
        return int(quality)

    # ------------------------------------------------------------------ transforms
    def _reconstruct(self, geometry: Sequence, y_hat: Sequence[torch.Tensor], gains: torch.Tensor) -> list:
        """Integer slices (original geometry and dtype) from dequantized latents: the learned layer."""
        with self._lock:
            images = run_in_mode(self.model.synthesis, torch.cat(list(y_hat)), self.device, self.mode,
                                 gains.to(self.device))
        pixels = images[:, 0].clamp(0, 1).cpu().numpy()
        return [restore_slice(img, rows=g.rows, columns=g.columns, dtype=g.dtype, bits_stored=g.bits_stored,
                              value_min=g.value_min, value_max=g.value_max) for img, g in zip(pixels, geometry)]

    # ------------------------------------------------------------------ entropy coding
    def _parameters(self, z_hat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(means, table index) of y from integer z, in float64 on the CPU (see module docstring)."""
        with torch.inference_mode():
            means, scales = entropy_parameters(self._h_s, z_hat.to(torch.float64))
        return means.numpy(), self.entropy.scale_index(scales.numpy())

    def _latent_symbols(self, y: torch.Tensor, z: torch.Tensor) -> tuple:
        """(y symbols, their table index, z symbols, dequantized y as float64) of one slice."""
        means, index = self._parameters(z)
        y_sym = np.round(y.numpy() - means).astype(np.int64)
        return y_sym, index, z.numpy().astype(np.int64), torch.from_numpy(y_sym + means)

    def _pack(self, item: NormalizedSlice, original: np.ndarray, quality: int, latent: tuple,
              x_hat: np.ndarray | None) -> bytes:
        y_sym, index, z_sym, _ = latent
        point = self.points[quality - 1]
        coder = new_coder()
        delta, block, r_over = residual.NO_RESIDUAL, 0, np.zeros(0, np.int32)
        if x_hat is not None and point.residual_db is not None:  # pushed first: decoded last
            symbols, delta = residual.quantize_for_target(original.astype(np.int64) - x_hat.astype(np.int64),
                                                          point.residual_db, item.value_max - item.value_min)
            block = residual.BLOCK
            table_map = residual.block_tables(symbols, self.entropy.gaussian, self.entropy.scales)
            rows = table_map[residual.block_index(symbols.shape)]
            r_over = self.entropy.gaussian.encode(coder, symbols.ravel(), rows)
            coder.encode_reverse(table_map.astype(np.int32), self._table_choice)
        y_over = self.entropy.gaussian.encode(coder, y_sym.ravel(), index.ravel())
        z_over = self.entropy.hyper.encode(coder, z_sym.ravel(), _channel_rows(z_sym.shape))
        header = RDBlobHeader(
            model_id=self.model_id, weights_sha256=self.weights_sha256, quality=quality,
            gain_level=point.gain_level, residual_delta=delta, residual_block=block,
            y_shape=tuple(int(n) for n in y_sym.shape[1:]),  # type: ignore[arg-type]
            z_shape=tuple(int(n) for n in z_sym.shape[1:]),  # type: ignore[arg-type]
            rows=item.rows, columns=item.columns, pad_bottom=item.pad_bottom, pad_right=item.pad_right,
            dtype=item.dtype.name, pixel_representation=item.pixel_representation, bits_stored=item.bits_stored,
            value_min=item.value_min, value_max=item.value_max,
        )
        return pack_rd_blob(header, coder.get_compressed(), np.concatenate([z_over, y_over, r_over]))

    def _decode_latent(self, blob: bytes) -> tuple[RDBlobHeader, torch.Tensor, object, np.ndarray]:
        """(header, dequantized y as float64, the ANS decoder positioned at the residual, unused overflow)."""
        first = read_header(blob)  # any container version: a foreign blob is a model mismatch, not damage
        if first.model_id != self.model_id or first.weights_sha256 != self.weights_sha256:
            raise ModelMismatchError(first.model_id, first.weights_sha256, self.model_id, self.weights_sha256)
        header, words, overflow = unpack_rd_blob(blob)
        ph, pw = header.padded_shape
        m, n = self.model.config.latent_channels, self.model.config.channels
        if (header.y_shape != (m, ph // Y_STRIDE, pw // Y_STRIDE)
                or header.z_shape != (n, ph // DOWNSCALE, pw // DOWNSCALE) or ph % DOWNSCALE or pw % DOWNSCALE
                or not 1 <= header.gain_level <= self.model.config.qualities
                or header.residual_block not in (0, residual.BLOCK)):
            raise CorruptBlobError(f"blob latent shapes {header.y_shape}/{header.z_shape}, gain level "
                                   f"{header.gain_level} or residual blocks {header.residual_block} do not "
                                   f"match this model and the geometry {header.padded_shape}")
        coder = new_coder(words)
        z_shape = (1, *header.z_shape)
        z_flat, used = self.entropy.hyper.decode(coder, _channel_rows(z_shape), overflow)
        z = torch.from_numpy(z_flat.reshape(z_shape).astype(np.float64))
        means, index = self._parameters(z)
        y_flat, used_y = self.entropy.gaussian.decode(coder, index.ravel(), overflow[used:])
        y_hat = torch.from_numpy(y_flat.reshape(means.shape) + means)  # float64; cast by the mode
        return header, y_hat, coder, overflow[used + used_y :]

    def _refine(self, header: RDBlobHeader, x_hat: np.ndarray, coder: object, overflow: np.ndarray) -> np.ndarray:
        """Add the residual layer (if any) to the learned reconstruction; check the stream ends there."""
        out = x_hat
        if header.residual_delta != residual.NO_RESIDUAL:
            blocks = residual.block_index(x_hat.shape)
            try:
                table_map = np.asarray(coder.decode(self._table_choice, int(blocks.max()) + 1))  # type: ignore
            except Exception as exc:  # constriction: exhausted or inconsistent stream
                raise CorruptBlobError(f"entropy-coded stream is damaged: {exc}") from exc
            rows = table_map.astype(np.int64)[blocks]
            symbols, used = self.entropy.gaussian.decode(coder, rows, overflow)
            overflow = overflow[used:]
            values = x_hat.astype(np.int64) + residual.dequantize(symbols, header.residual_delta).reshape(
                x_hat.shape)
            out = np.clip(values, header.value_min, header.value_max).astype(x_hat.dtype)
        if overflow.size or not coder.is_empty():  # type: ignore[attr-defined]
            raise CorruptBlobError("entropy-coded stream does not end where its header says")
        return out


def _channel_rows(shape: tuple[int, ...]) -> np.ndarray:
    """Flat table row (= channel) of each element of a (1, C, H, W) array."""
    _, c, h, w = shape
    return np.repeat(np.arange(c, dtype=np.int64), h * w)


#: The architecture name a card gives for this family.
ARCHITECTURE = "mshp"
_TABLES = ("entropy.gaussian", "entropy.hyper")


def entropy_tensors(network: MeanScaleHyperprior) -> dict[str, torch.Tensor]:
    """The integer tables (and the scale table) of a trained network, for its weights file (export time)."""
    from .tables import gaussian_tables, hyper_tables

    out = {**gaussian_tables().tensors(_TABLES[0]),
           **hyper_tables(network.z_prior, network.config.channels).tensors(_TABLES[1])}
    out["entropy.scales"] = torch.from_numpy(scale_table())
    return out


def network_from_card(card: ModelCard) -> MeanScaleHyperprior:
    from .network import RDConfig

    cfg = dict(card.extra.get("rd_config") or {})
    if "lambdas" in cfg:
        cfg["lambdas"] = tuple(cfg["lambdas"])
    return MeanScaleHyperprior(RDConfig(**cfg))


@register_model(ARCHITECTURE)
def rd_codec_from_tensors(
    tensors: dict[str, torch.Tensor], card: ModelCard, *, device: str | torch.device = "auto",
    mode: str = DEFAULT_MODE, brotli_quality: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
) -> RDCodec:
    """An ``RDCodec`` from a hash-checked weights file's tensors and its card (``brotli_quality`` does not
    apply: this family entropy-codes with its own tables)."""
    network = network_from_card(card)
    state = {k: v.float() for k, v in tensors.items() if not k.startswith("entropy.")}
    try:
        network.load_state_dict(state, strict=True)
        entropy = EntropyModels(Tables.from_tensors(tensors, _TABLES[0]), Tables.from_tensors(tensors, _TABLES[1]),
                                tensors["entropy.scales"].double().numpy())
    except (KeyError, RuntimeError) as exc:
        raise CodecError(f"model {card.model_id!r}: weights do not match a {ARCHITECTURE} network: {exc}") from exc
    points = [OperatingPoint.parse(p) for p in card.extra.get("operating_points") or []] or None
    return RDCodec(network.eval(), entropy, model_id=card.model_id, weights_sha256=card.sha256, device=device,
                   mode=cast(Mode, mode), max_batch=max_batch, operating_points=points,
                   default_quality=card.extra.get("default_quality"), card=card)
