"""``RDCodec``: slices <-> version-4 blobs with the mean-scale hyperprior, at a ``quality`` or an error bound.

Encode: per-slice min/max normalisation and edge padding to a multiple of 64 (``codec.normalize``), analysis with
the operating point's gain, hyper-analysis, rounding, then ANS coding of ``z`` (factorized tables) and of
``y - mu`` (Gaussian tables chosen by the predicted scale), and for the bounded / high-quality points a residual
layer (``residual``). Decode runs it backwards.

Exactness across machines, modes, thread counts and batch sizes (version 4): every probability comes from
integer tables in the weights file (``tables``), chosen from ``h_s`` run in float64 on the CPU on integer
inputs; the transforms run in float64, one slice at a time, and the rounding of the reconstruction to integer
levels is made certain by the ties the encoder lists (``exact``). So the blob bytes and the decoded pixels do
not depend on the codec's ``mode`` (which only version-3 blobs, decoded as before, still use), on the thread
count or on how slices are batched, and ``max_abs_error`` is a guarantee: ``|x - y| <= delta`` for every
pixel, ``delta = 0`` bit-exact.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from ..container import (
    RESIDUAL_BLOCKS,
    RESIDUAL_CONTEXT,
    RESIDUAL_LEARNED,
    RESIDUAL_NONE,
    RDBlobHeader,
    RDPayload,
    pack_rd_blob,
    read_header,
    unpack_rd_blob,
)
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
from ..normalize import NormalizedSlice, normalize_slice, restore_slice, value_range
from ..weights import ModelCard
from . import context, exact, residual, scale_net
from .coder import TableCoder, Uniform, new_coder
from .network import DOWNSCALE, MeanScaleHyperprior, entropy_parameters
from .tables import Tables, scale_table

#: y's stride relative to the slice (z's is DOWNSCALE).
Y_STRIDE = 16
#: ``gain_level`` of a version-4 blob coded by the residual model alone (no y, no z; x_hat = value_min).
NO_LEARNED_LAYER = 0


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
        residual_scale_net: scale_net.IntegerScaleNet | None = None,
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
        self._weight_choice = Uniform(2 * context.WEIGHT_HALF)  # predictor weights
        #: the learned residual scale network (model 3), if the weights file has one
        self.scale_net = residual_scale_net
        #: the residual model new blobs use (``container.RESIDUAL_*``)
        self.residual_model = RESIDUAL_CONTEXT if residual_scale_net is None else RESIDUAL_LEARNED
        # the probability path: float64, CPU, whatever the mode of the transforms
        self._h_s = copy.deepcopy(network.h_s).to("cpu", torch.float64).eval()
        # the pixel path of version-4 blobs: float64 whatever the mode (``exact``)
        self._exact = copy.deepcopy(network).to(self.device, torch.float64).eval()
        self.model = place_in_mode(network, self.device, self.mode)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RDCodec({self.model_id!r}, device={self.device}, mode={self.mode!r})"

    # ------------------------------------------------------------------ public API
    #: ``encode(..., max_abs_error=delta)`` is supported: every pixel within delta, ``delta = 0`` bit-exact.
    supports_max_abs_error = True

    def encode(
        self,
        slices: Sequence[np.ndarray],
        *,
        bits_stored: int | Sequence[int | None] | None = None,
        quality: int | Sequence[int | None] | None = None,
        max_abs_error: int | Sequence[int | None] | None = None,
    ) -> list[bytes]:
        """Encode 2-D integer slices (any size, 8-16 bit, signed or not) into version-4 blobs, in input order.

        Per slice (one value for all or one per slice), either ``quality`` (1..qualities; default the card's)
        or ``max_abs_error`` = delta >= 0: every decoded pixel is then within delta of the original by
        construction (0: bit-exact), whatever machine or mode decodes it; the header records it
        (``read_header(blob).max_abs_error``). Giving both for one slice is a ``CodecError``. The bytes do not
        depend on the mode, thread count or batching.
        """
        bits = _per_item(bits_stored, len(slices))
        if isinstance(max_abs_error, bool) or isinstance(quality, bool):
            raise CodecError(f"model {self.model_id!r}: quality and max_abs_error must be integers, not booleans")
        try:
            per_slice = list(zip(_per_item(quality, len(slices)), _per_item(max_abs_error, len(slices))))
        except TypeError:  # a float or other non-integer given for all slices
            raise CodecError(f"model {self.model_id!r}: quality and max_abs_error must be integers (or one per "
                             f"slice), got {quality!r} / {max_abs_error!r}") from None
        plans = [self.plan(q, d) for q, d in per_slice]
        return [self._encode_one(np.asarray(s), b, plan) for s, b, plan in zip(slices, bits, plans)]

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode blobs made by this exact model into slices of their original shape and dtype.

        Raises ``CorruptBlobError`` for damaged blobs and ``ModelMismatchError`` for blobs of other weights.
        """
        parsed = [self._parse(blob) for blob in blobs]
        out: list[np.ndarray] = [np.empty(0)] * len(parsed)
        legacy = [i for i, p in enumerate(parsed) if p.header.container_version < 4]
        for i, p in enumerate(parsed):
            if p.header.container_version >= 4:
                out[i] = self._decode_exact(p)
        for indices in batches_by_shape((parsed[i].header.padded_shape for i in legacy), self.max_batch):
            members = [legacy[k] for k in indices]
            latents = [self._decode_latent(parsed[i]) for i in members]
            headers = [parsed[i].header for i in members]
            gains = torch.tensor([h.gain_level - 1 for h in headers])
            x_hat = self._reconstruct_in_mode(headers, [lat[0] for lat in latents], gains)
            for j, i in enumerate(members):
                _, coder, overflow = latents[j]
                out[i] = self._refine(headers[j], x_hat[j].astype(np.int64), coder, overflow).astype(
                    headers[j].dtype)
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

    def check_max_abs_error(self, delta: int | None) -> int | None:
        """``delta`` as an int (``None`` passes); raises ``CodecError`` unless an integer 0..MAX_DELTA."""
        if delta is None:
            return None
        if isinstance(delta, bool) or not isinstance(delta, (int, np.integer)) or not (
                0 <= int(delta) <= residual.MAX_DELTA):
            raise CodecError(f"model {self.model_id!r}: max_abs_error must be an integer 0..{residual.MAX_DELTA}"
                             f", got {delta!r}")
        return int(delta)

    def bound_gain_level(self, delta: int) -> int:
        """The network gain level under a ``delta`` bound: the card's measured choice for the nearest listed
        delta at or below it (``bound_gain_levels``), else the gain level of the residual operating points."""
        table = {int(k): int(v) for k, v in (self.card.extra.get("bound_gain_levels") or {}).items()} \
            if self.card is not None else {}
        listed = [d for d in table if d <= delta]
        if listed:
            return table[max(listed)]
        residual_levels = [p.gain_level for p in self.points if p.residual_db is not None]
        return residual_levels[0] if residual_levels else self.points[-1].gain_level

    def plan(self, quality: int | None, max_abs_error: int | None) -> _Plan:
        """What one slice is encoded with (checks the arguments; ``CodecError`` when they are invalid)."""
        delta = self.check_max_abs_error(max_abs_error)
        if delta is not None:
            if quality is not None:
                raise CodecError(f"model {self.model_id!r}: give quality or max_abs_error for a slice, not both")
            return _Plan(quality=0, gain_level=self.bound_gain_level(delta), delta=delta, residual_db=None)
        q = self.check_quality(quality)
        point = self.points[q - 1]
        return _Plan(quality=q, gain_level=point.gain_level, delta=None, residual_db=point.residual_db)

    # ------------------------------------------------------------------ version 4 (exact)
    def _exact_run(self, fn: Callable[..., torch.Tensor], x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        """``fn(x, *args)`` of the float64 network on the device, back as a float64 CPU tensor."""
        with self._lock, torch.inference_mode():
            return fn(x.to(self.device, torch.float64), *(a.to(self.device) for a in args)).cpu()

    def _levels(self, y_hat: torch.Tensor, gain: torch.Tensor, geometry: NormalizedSlice | RDBlobHeader
                ) -> np.ndarray:
        """Unrounded float64 levels of the learned reconstruction (see ``exact``)."""
        image = self._exact_run(self._exact.synthesis, y_hat, gain)[0, 0].numpy()
        return exact.level_values(image, geometry.rows, geometry.columns, geometry.value_min, geometry.value_max)

    def _encode_one(self, original: np.ndarray, bits: int | None, plan: _Plan) -> bytes:
        """The blob of one slice; under a bound, the smaller of with and without the learned layer."""
        item = normalize_slice(original, bits, DOWNSCALE)
        blob = self._encode_with(item, original, plan, plan.gain_level)
        if plan.delta is not None and self.residual_model in (RESIDUAL_CONTEXT, RESIDUAL_LEARNED):
            alone = self._encode_with(item, original, plan, NO_LEARNED_LAYER)
            blob = min(blob, alone, key=len)
        return blob

    def _encode_with(self, item: NormalizedSlice, original: np.ndarray, plan: _Plan, gain_level: int) -> bytes:
        coder = new_coder()
        if gain_level == NO_LEARNED_LAYER:  # the residual model alone, from the slice's minimum
            x_hat = _flat_base(item)
            tie_positions = tie_values = np.zeros(0, np.int64)
            latent: tuple | None = None
        else:
            gain = torch.tensor([gain_level - 1])
            x = torch.from_numpy(item.data[None, None]).double()
            y = self._exact_run(self._exact.analysis, x, gain)
            z = torch.round(self._exact_run(self._exact.h_a, y))
            latent = self._latent_symbols(y, z)
            values = self._levels(latent[3], gain, item)
            tie_positions, tie_values = exact.find_ties(values, item.value_min, item.value_max)
            x_hat = exact.round_levels(values, tie_positions, tie_values, item.value_min, item.value_max)
        delta, model, block, r_over = residual.NO_RESIDUAL, RESIDUAL_NONE, 0, np.zeros(0, np.int32)
        if plan.delta is not None or plan.residual_db is not None:  # pushed first: decoded last
            r = original.astype(np.int64) - x_hat
            if plan.delta is not None:
                delta = plan.delta
                symbols = residual.quantize(r, delta)
            else:
                target = float(plan.residual_db)  # type: ignore[arg-type]
                symbols, delta = residual.quantize_for_target(r, target, item.value_max - item.value_min)
            model, block = self.residual_model, residual.BLOCK
            if model in (RESIDUAL_CONTEXT, RESIDUAL_LEARNED):
                contexts, count = self._contexts(model)
                r_over = context.encode(coder, symbols, delta, x_hat,
                                        context.intensity_classes(x_hat, item.value_min, item.value_max),
                                        self.entropy.gaussian, self.entropy.scales, self._table_choice,
                                        self._weight_choice, contexts, count)
            else:
                r_over = residual.encode_blocks(coder, symbols, self.entropy.gaussian, self.entropy.scales,
                                                self._table_choice)
        y_shape = z_shape = (0, 0, 0)
        y_over = z_over = np.zeros(0, np.int32)
        if latent is not None:
            y_sym, index, z_sym, _ = latent
            y_over = self.entropy.gaussian.encode(coder, y_sym.ravel(), index.ravel())
            z_over = self.entropy.hyper.encode(coder, z_sym.ravel(), _channel_rows(z_sym.shape))
            y_shape, z_shape = _shape3(y_sym.shape[1:]), _shape3(z_sym.shape[1:])
        header = RDBlobHeader(
            model_id=self.model_id, weights_sha256=self.weights_sha256, quality=plan.quality,
            gain_level=gain_level, residual_delta=delta, residual_block=block, residual_model=model,
            y_shape=y_shape, z_shape=z_shape,
            rows=item.rows, columns=item.columns, pad_bottom=item.pad_bottom, pad_right=item.pad_right,
            dtype=item.dtype.name, pixel_representation=item.pixel_representation, bits_stored=item.bits_stored,
            value_min=item.value_min, value_max=item.value_max,
        )
        words = coder.get_compressed()
        return pack_rd_blob(header, words, np.concatenate([z_over, y_over, r_over]), tie_positions, tie_values)

    def _decode_exact(self, payload: RDPayload) -> np.ndarray:
        header = payload.header
        if header.gain_level == NO_LEARNED_LAYER:
            coder, overflow = new_coder(payload.words), payload.overflow
            x_hat = _flat_base(header)
        else:
            y_hat, coder, overflow = self._decode_latent(payload)
            values = self._levels(y_hat, torch.tensor([header.gain_level - 1]), header)
            x_hat = exact.round_levels(values, payload.tie_positions, payload.tie_values, header.value_min,
                                       header.value_max)
        out = self._refine(header, x_hat, coder, overflow)
        low, high = value_range(np.dtype(header.dtype), header.bits_stored)
        return np.clip(out, low, high).astype(header.dtype)

    # ------------------------------------------------------------------ version 3 (decoded as before)
    def _reconstruct_in_mode(self, geometry: Sequence, y_hat: Sequence[torch.Tensor], gains: torch.Tensor
                             ) -> list:
        """Integer slices (original geometry and dtype) from dequantized latents in the codec's mode."""
        with self._lock:
            output = run_in_mode(self.model.synthesis, torch.cat(list(y_hat)), self.device, self.mode,
                                 gains.to(self.device))
        pixels = output[:, 0].clamp(0, 1).cpu().numpy()
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

    def _parse(self, blob: bytes) -> RDPayload:
        """The checked payload of a blob of this model (``ModelMismatchError`` / ``CorruptBlobError``)."""
        first = read_header(blob)  # any container version: a foreign blob is a model mismatch, not damage
        if first.model_id != self.model_id or first.weights_sha256 != self.weights_sha256:
            raise ModelMismatchError(first.model_id, first.weights_sha256, self.model_id, self.weights_sha256)
        payload = unpack_rd_blob(blob)
        header = payload.header
        ph, pw = header.padded_shape
        m, n = self.model.config.latent_channels, self.model.config.channels
        residual_ok = ((header.residual_delta == residual.NO_RESIDUAL and header.residual_model == RESIDUAL_NONE)
                       or (header.residual_delta != residual.NO_RESIDUAL and header.residual_block == residual.BLOCK
                           and (header.residual_model in (RESIDUAL_BLOCKS, RESIDUAL_CONTEXT)
                                or (header.residual_model == RESIDUAL_LEARNED and self.scale_net is not None))
                           and (header.container_version >= 4 or header.residual_model == RESIDUAL_BLOCKS)))
        alone = (header.container_version >= 4 and header.gain_level == NO_LEARNED_LAYER
                 and header.residual_model in (RESIDUAL_CONTEXT, RESIDUAL_LEARNED) and header.ties == 0)
        shapes = ((m, ph // Y_STRIDE, pw // Y_STRIDE), (n, ph // DOWNSCALE, pw // DOWNSCALE)) if not alone else (
            (0, 0, 0), (0, 0, 0))
        if ((header.y_shape, header.z_shape) != shapes or ph % DOWNSCALE or pw % DOWNSCALE
                or not (alone or 1 <= header.gain_level <= self.model.config.qualities) or not residual_ok
                or header.rows * header.columns == 0 or header.value_min > header.value_max):
            raise CorruptBlobError(f"blob latent shapes {header.y_shape}/{header.z_shape}, gain level "
                                   f"{header.gain_level} or residual layer ({header.residual_model}, "
                                   f"{header.residual_block}) do not match this model and the geometry "
                                   f"{header.padded_shape}")
        return payload

    def _decode_latent(self, payload: RDPayload) -> tuple[torch.Tensor, object, np.ndarray]:
        """(dequantized y as float64, the ANS decoder positioned at the residual, unused overflow)."""
        header, overflow = payload.header, payload.overflow
        coder = new_coder(payload.words)
        z_shape = (1, *header.z_shape)
        z_flat, used = self.entropy.hyper.decode(coder, _channel_rows(z_shape), overflow)
        z = torch.from_numpy(z_flat.reshape(z_shape).astype(np.float64))
        means, index = self._parameters(z)
        y_flat, used_y = self.entropy.gaussian.decode(coder, index.ravel(), overflow[used:])
        y_hat = torch.from_numpy(y_flat.reshape(means.shape) + means)  # float64
        return y_hat, coder, overflow[used + used_y :]

    def _contexts(self, model: int) -> tuple[context.ContextFn, int]:
        """The context function of residual model 2 (activity buckets) or 3 (the learned scale classes)."""
        net = self.scale_net
        if model != RESIDUAL_LEARNED or net is None:
            return context.activity_contexts, context.CONTEXTS

        def learned(features: np.ndarray, flat: np.ndarray, intensity: np.ndarray, step: int) -> np.ndarray:
            x = scale_net.inputs(features[: context.NEIGHBOURS], features[context.NEIGHBOURS :], flat, intensity,
                                 step)
            return flat.astype(np.int64) * scale_net.CLASSES + net(x)

        return learned, 2 * scale_net.CLASSES

    def _refine(self, header: RDBlobHeader, x_hat: np.ndarray, coder: object, overflow: np.ndarray) -> np.ndarray:
        """Add the residual layer (if any) to the integer learned reconstruction (int64); check the stream ends."""
        out = x_hat
        if header.residual_model in (RESIDUAL_CONTEXT, RESIDUAL_LEARNED):
            contexts, count = self._contexts(header.residual_model)
            symbols, used = context.decode(
                coder, x_hat.shape, header.residual_delta, x_hat,
                context.intensity_classes(x_hat, header.value_min, header.value_max), self.entropy.gaussian,
                self._table_choice, self._weight_choice, overflow, contexts, count)
        elif header.residual_delta != residual.NO_RESIDUAL:
            symbols, used = residual.decode_blocks(coder, x_hat.shape, self.entropy.gaussian, self._table_choice,
                                                   overflow)
        if header.residual_delta != residual.NO_RESIDUAL:
            overflow = overflow[used:]
            out = residual.reconstruct(x_hat, symbols, header.residual_delta, header.value_min, header.value_max)
        if overflow.size or not coder.is_empty():  # type: ignore[attr-defined]
            raise CorruptBlobError("entropy-coded stream does not end where its header says")
        return out


@dataclass(frozen=True)
class _Plan:
    """How one slice is encoded: recorded quality (0: bound), gain level, and the residual layer's rule."""

    quality: int
    gain_level: int
    delta: int | None  # a max_abs_error bound
    residual_db: float | None  # a quality's PSNR target


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    c, h, w = (int(n) for n in shape)
    return c, h, w


def _flat_base(geometry: NormalizedSlice | RDBlobHeader) -> np.ndarray:
    """x_hat of a blob without the learned layer: the slice's minimum everywhere -- MR background, so the
    pixels whose template reaches outside the slice (residual 0 there) are predicted as background."""
    return np.full((geometry.rows, geometry.columns), geometry.value_min, np.int64)


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
    state = {k: v.float() for k, v in tensors.items() if not k.startswith(("entropy.", "residual."))}
    try:
        network.load_state_dict(state, strict=True)
        entropy = EntropyModels(Tables.from_tensors(tensors, _TABLES[0]), Tables.from_tensors(tensors, _TABLES[1]),
                                tensors["entropy.scales"].double().numpy())
        net = scale_net.IntegerScaleNet.from_tensors(tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CodecError(f"model {card.model_id!r}: weights do not match a {ARCHITECTURE} network: {exc}") from exc
    points = [OperatingPoint.parse(p) for p in card.extra.get("operating_points") or []] or None
    return RDCodec(network.eval(), entropy, model_id=card.model_id, weights_sha256=card.sha256, device=device,
                   mode=cast(Mode, mode), max_batch=max_batch, operating_points=points,
                   default_quality=card.extra.get("default_quality"), card=card, residual_scale_net=net)
