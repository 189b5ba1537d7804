"""The learned codec: the paper's CAE, Eq. 2/3 quantization, Brotli and a versioned blob container.

Public API (stable; see ``docs/codec.md``)::

    codec = load_codec("cae-paper", device="auto")
    blobs = codec.encode(slices, bits_stored=12)   # list[bytes]
    slices = codec.decode(blobs)                   # list[np.ndarray], original shape and dtype

Every codec (``Codec``, ``RDCodec``, ``BatchingCodec``) implements :class:`SliceCodec` (``codec.base``); model
families register with :func:`register_model` (``codec.families``).
"""

from .base import BlobDecoder, SliceCodec
from .batcher import BatchingCodec
from .container import CONTAINER_VERSION, BlobHeader, read_header
from .device import resolve_device
from .engine import DEFAULT_BROTLI_QUALITY, DEFAULT_MODE, MODES, Codec, load_codec
from .errors import (
    CodecError,
    CorruptBlobError,
    ModelMismatchError,
    UnknownModelError,
    WeightsIntegrityError,
)
from .families import register_model
from .lossless import PixelLayout, decode_lossless, encode_lossless
from .registry import CodecRegistry
from .weights import ModelCard, available_models, default_models_dir, load_model, save_model

__all__ = [
    "CONTAINER_VERSION",
    "DEFAULT_BROTLI_QUALITY",
    "DEFAULT_MODE",
    "MODES",
    "BatchingCodec",
    "BlobDecoder",
    "BlobHeader",
    "Codec",
    "CodecError",
    "CodecRegistry",
    "CorruptBlobError",
    "ModelCard",
    "ModelMismatchError",
    "PixelLayout",
    "SliceCodec",
    "UnknownModelError",
    "WeightsIntegrityError",
    "available_models",
    "decode_lossless",
    "default_models_dir",
    "encode_lossless",
    "load_codec",
    "load_model",
    "read_header",
    "register_model",
    "resolve_device",
    "save_model",
]
