"""The standard codecs the CAE is compared with, via imagecodecs (libjpeg-turbo, OpenJPEG, CharLS, libjxl).

Every codec gets the same integer slice the CAE gets and must return an array of the same shape and dtype, so
the metrics are computed identically. Conventions, stated so the comparison is fair and reproducible:

* Signed slices (or any with negative values) are shifted by their minimum to unsigned before encoding and
  shifted back after decoding; the offset costs nothing here (DICOM has PixelRepresentation instead).
* ``bits`` is the slice's BitsStored; JPEG 2000 and JPEG-XL are told it (``bitspersample``).
* JPEG is baseline/extended DCT JPEG (ISO 10918-1): 8-bit for slices of <= 8 bits, otherwise 12-bit precision.
  Slices with more than 12 stored bits are first scaled to 12 bits, and that scaling error is counted.
* JPEG 2000 lossy uses OpenJPEG's distortion target (imagecodecs ``level`` = target PSNR in dB relative to the
  full BitsStored range, not the slice range), lossless the reversible 5/3 wavelet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np

Encoder = Callable[[np.ndarray, int], bytes]
Decoder = Callable[[bytes, int], np.ndarray]  # (codestream, bits) -> pixels

JPEG_QUALITIES = (50, 75, 90, 95)
J2K_TARGET_PSNR_DB = (40, 50, 60, 70)
JXL_DISTANCES = (0.5, 1.0, 2.0)
JPEGLS_NEAR = (2,)


@dataclass(frozen=True)
class StandardCodec:
    """One standard codec at one setting."""

    name: str  # unique row label, e.g. "JPEG q75"
    family: str  # "JPEG", "JPEG 2000", ... (one line per family in the plot)
    lossless: bool
    encoder: Encoder
    decoder: Decoder

    def roundtrip(self, pixels: np.ndarray, bits: int) -> tuple[bytes, np.ndarray, float, float]:
        """Encode and decode one integer slice.

        Returns the codestream, the decoded slice (input dtype), and the encode and decode times in seconds.
        """
        offset = int(pixels.min()) if (pixels.dtype.kind == "i" or pixels.min() < 0) else 0
        shifted = pixels.astype(np.int64) - offset
        bits = max(int(bits), int(shifted.max()).bit_length(), 1)
        work = shifted.astype(np.uint8 if bits <= 8 else np.uint16)
        t0 = time.perf_counter()
        stream = self.encoder(work, bits)
        t1 = time.perf_counter()
        raw = self.decoder(stream, bits)
        t2 = time.perf_counter()
        decoded = np.rint(np.asarray(raw, dtype=np.float64)).reshape(pixels.shape).astype(np.int64) + offset
        info = np.iinfo(pixels.dtype)
        return stream, np.clip(decoded, info.min, info.max).astype(pixels.dtype), t1 - t0, t2 - t1


def _jpeg_encode(quality: int) -> Encoder:
    def encode(img: np.ndarray, bits: int) -> bytes:
        if bits <= 8:
            return imagecodecs.jpeg8_encode(img.astype(np.uint8), level=quality)
        if bits > 12:  # scale to 12 bits; the scaling error is part of JPEG's error
            img = np.rint(img.astype(np.float64) * (4095 / ((1 << bits) - 1)))
        return imagecodecs.jpeg8_encode(img.astype(np.uint16), level=quality, bitspersample=12)

    return encode


def _jpeg_decode(stream: bytes, bits: int) -> np.ndarray:
    out = imagecodecs.jpeg8_decode(stream)
    if bits > 12:
        return np.rint(out.astype(np.float64) * (((1 << bits) - 1) / 4095))
    return out


def _plain(decode: Callable[[bytes], np.ndarray]) -> Decoder:
    """A decoder that needs no side information."""
    return lambda stream, bits: decode(stream)


def standard_codecs() -> list[StandardCodec]:
    """The comparison set (the paper's Table 5 codecs, measured): order = table order."""
    out: list[StandardCodec] = []
    for q in JPEG_QUALITIES:
        out.append(StandardCodec(f"JPEG q{q}", "JPEG", False, _jpeg_encode(q), _jpeg_decode))
    for target in J2K_TARGET_PSNR_DB:
        out.append(
            StandardCodec(
                f"JPEG 2000 {target} dB",
                "JPEG 2000",
                False,
                lambda img, bits, t=target: imagecodecs.jpeg2k_encode(img, level=t, bitspersample=bits),
                _plain(imagecodecs.jpeg2k_decode),
            )
        )
    out.append(
        StandardCodec(
            "JPEG 2000 lossless",
            "JPEG 2000 lossless",
            True,
            lambda img, bits: imagecodecs.jpeg2k_encode(img, reversible=True, bitspersample=bits),
            _plain(imagecodecs.jpeg2k_decode),
        )
    )
    out.append(
        StandardCodec(
            "JPEG-LS lossless",
            "JPEG-LS lossless",
            True,
            lambda img, bits: imagecodecs.jpegls_encode(img),
            _plain(imagecodecs.jpegls_decode),
        )
    )
    for near in JPEGLS_NEAR:
        out.append(
            StandardCodec(
                f"JPEG-LS near {near}",
                "JPEG-LS near-lossless",
                False,
                lambda img, bits, n=near: imagecodecs.jpegls_encode(img, level=n),
                _plain(imagecodecs.jpegls_decode),
            )
        )
    out.append(
        StandardCodec(
            "JPEG-XL lossless",
            "JPEG-XL lossless",
            True,
            lambda img, bits: imagecodecs.jpegxl_encode(img, lossless=True, bitspersample=bits),
            _plain(imagecodecs.jpegxl_decode),
        )
    )
    for distance in JXL_DISTANCES:
        out.append(
            StandardCodec(
                f"JPEG-XL d{distance:g}",
                "JPEG-XL",
                False,
                lambda img, bits, d=distance: imagecodecs.jpegxl_encode(img, distance=d, bitspersample=bits),
                _plain(imagecodecs.jpegxl_decode),
            )
        )
    return out
