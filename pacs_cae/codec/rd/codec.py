"""``RDCodec``: slices <-> version-3 blobs with the mean-scale hyperprior, at a chosen ``quality``.

Encode: per-slice min/max normalisation and edge padding to a multiple of 64 (``dicom.pixels``), analysis with
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

import numpy as np
import torch

from ...dicom.pixels import NormalizedSlice, normalize_slice, restore_slice
from ..container import RDBlobHeader, pack_rd_blob, read_header, unpack_rd_blob
from ..device import resolve_device
from ..engine import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MODE,
    MODES,
    Mode,
    _per_item,
    batches_by_shape,
    mode_dtype,
    mode_memory_format,
    resolve_mode,
    run_in_mode,
)
from ..errors import CodecError, CorruptBlobError, ModelMismatchError
from ..weights import ModelCard
from .coder import TableCoder, new_coder
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
            self.mode = "channels_last"  # bf16 caps the reconstruction near 55-60 dB: never the default here
        self.max_batch = max_batch
        self.card = card
        self.qualities = network.config.qualities
        self.default_quality = default_quality or self.qualities
        self.entropy = entropy
        # the probability path: float64, CPU, whatever the mode of the transforms
        self._h_s = copy.deepcopy(network.h_s).to("cpu", torch.float64).eval()
        self.model = network.to(self.device, mode_dtype(self.mode)).to(
            memory_format=mode_memory_format(self.mode)).eval()
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
            q = torch.tensor([levels[i] - 1 for i in indices])
            with self._lock:
                y = run_in_mode(self.model.analysis, x, self.device, self.mode, q.to(self.device))
                z = run_in_mode(self.model.h_a, y, self.device, self.mode)
            y64, z64 = y.cpu().double(), torch.round(z.cpu().double())
            for j, i in enumerate(indices):
                blobs[i] = self._encode_one(prepared[i], levels[i], y64[j : j + 1], z64[j : j + 1])
        return blobs

    def decode(self, blobs: Sequence[bytes]) -> list[np.ndarray]:
        """Decode blobs made by this exact model into slices of their original shape and dtype.

        Raises ``CorruptBlobError`` for damaged blobs and ``ModelMismatchError`` for blobs of other weights.
        """
        parsed = [self._decode_latent(blob) for blob in blobs]
        out: list[np.ndarray] = [np.empty(0)] * len(parsed)
        for indices in batches_by_shape((p[1].shape for p in parsed), self.max_batch):
            y_hat = torch.cat([parsed[i][1] for i in indices])
            q = torch.tensor([parsed[i][0].quality - 1 for i in indices], device=self.device)
            with self._lock:
                images = run_in_mode(self.model.synthesis, y_hat, self.device, self.mode, q)
            images = images[:, 0].clamp(0, 1).cpu().numpy()
            for j, i in enumerate(indices):
                h = parsed[i][0]
                out[i] = restore_slice(
                    images[j], rows=h.rows, columns=h.columns, dtype=h.dtype, bits_stored=h.bits_stored,
                    value_min=h.value_min, value_max=h.value_max,
                )
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

    # ------------------------------------------------------------------ entropy coding
    def _parameters(self, z_hat: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(means, table index) of y from integer z, in float64 on the CPU (see module docstring)."""
        with torch.inference_mode():
            means, scales = entropy_parameters(self._h_s, z_hat.to(torch.float64))
        return means.numpy(), self.entropy.scale_index(scales.numpy())

    def _encode_one(self, item: NormalizedSlice, quality: int, y: torch.Tensor, z: torch.Tensor) -> bytes:
        means, index = self._parameters(z)
        y_sym = np.round(y.numpy() - means).astype(np.int64)
        z_sym = z.numpy().astype(np.int64)
        coder = new_coder()
        y_over = self.entropy.gaussian.encode(coder, y_sym.ravel(), index.ravel())
        z_over = self.entropy.hyper.encode(coder, z_sym.ravel(), _channel_rows(z_sym.shape))
        header = RDBlobHeader(
            model_id=self.model_id, weights_sha256=self.weights_sha256, quality=quality,
            y_shape=tuple(int(n) for n in y_sym.shape[1:]),  # type: ignore[arg-type]
            z_shape=tuple(int(n) for n in z_sym.shape[1:]),  # type: ignore[arg-type]
            rows=item.rows, columns=item.columns, pad_bottom=item.pad_bottom, pad_right=item.pad_right,
            dtype=item.dtype.name, pixel_representation=item.pixel_representation, bits_stored=item.bits_stored,
            value_min=item.value_min, value_max=item.value_max,
        )
        return pack_rd_blob(header, coder.get_compressed(), np.concatenate([z_over, y_over]))

    def _decode_latent(self, blob: bytes) -> tuple[RDBlobHeader, torch.Tensor]:
        first = read_header(blob)  # any container version: a foreign blob is a model mismatch, not damage
        if first.model_id != self.model_id or first.weights_sha256 != self.weights_sha256:
            raise ModelMismatchError(first.model_id, first.weights_sha256, self.model_id, self.weights_sha256)
        header, words, overflow = unpack_rd_blob(blob)
        ph, pw = header.padded_shape
        m, n = self.model.config.latent_channels, self.model.config.channels
        if (header.y_shape != (m, ph // Y_STRIDE, pw // Y_STRIDE) or header.z_shape != (n, ph // DOWNSCALE,
                                                                                         pw // DOWNSCALE)
                or ph % DOWNSCALE or pw % DOWNSCALE or not 1 <= header.quality <= self.qualities):
            raise CorruptBlobError(f"blob latent shapes {header.y_shape}/{header.z_shape} or quality "
                                   f"{header.quality} do not match its geometry {header.padded_shape}")
        coder = new_coder(words)
        z_shape = (1, *header.z_shape)
        z_flat, used = self.entropy.hyper.decode(coder, _channel_rows(z_shape), overflow)
        z = torch.from_numpy(z_flat.reshape(z_shape).astype(np.float64))
        means, index = self._parameters(z)
        y_flat, used_y = self.entropy.gaussian.decode(coder, index.ravel(), overflow[used:])
        if used + used_y != overflow.size or not coder.is_empty():
            raise CorruptBlobError("entropy-coded stream does not end where its header says")
        y_hat = torch.from_numpy(y_flat.reshape(means.shape) + means)  # float64; cast by the mode
        return header, y_hat

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


def rd_codec_from_tensors(
    tensors: dict[str, torch.Tensor], card: ModelCard, *, device: str | torch.device = "auto",
    mode: Mode = DEFAULT_MODE, max_batch: int = DEFAULT_MAX_BATCH,
) -> RDCodec:
    """An ``RDCodec`` from a hash-checked weights file's tensors and its card."""
    network = network_from_card(card)
    state = {k: v.float() for k, v in tensors.items() if not k.startswith("entropy.")}
    try:
        network.load_state_dict(state, strict=True)
        entropy = EntropyModels(Tables.from_tensors(tensors, _TABLES[0]), Tables.from_tensors(tensors, _TABLES[1]),
                                tensors["entropy.scales"].double().numpy())
    except (KeyError, RuntimeError) as exc:
        raise CodecError(f"model {card.model_id!r}: weights do not match a {ARCHITECTURE} network: {exc}") from exc
    return RDCodec(network.eval(), entropy, model_id=card.model_id, weights_sha256=card.sha256, device=device,
                   mode=mode, max_batch=max_batch, default_quality=card.extra.get("default_quality"), card=card)
