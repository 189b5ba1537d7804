"""The standard codecs the learned codec is compared with, via imagecodecs (libjpeg-turbo, OpenJPEG, CharLS,
libjxl, libavif/aom).

Every codec gets the same integer slice the learned codec gets and must return an array of the same shape and
dtype, so the metrics are computed identically. The lossy settings span ~40-70 dB (PSNR with R = max - min of
each slice) on 12-bit clinical MR, the range a diagnostic archive cares about, so the BD-rate interval is
covered. Conventions, stated so the comparison is fair and reproducible:

* Signed slices (or any with negative values) are shifted by their minimum to unsigned before encoding and
  shifted back after decoding; the offset costs nothing here (DICOM has PixelRepresentation instead).
* ``bits`` is the slice's BitsStored; JPEG 2000 and JPEG-XL are told it (``bitspersample``).
* JPEG is baseline/extended DCT JPEG (ISO 10918-1): 8-bit for slices of <= 8 bits, otherwise 12-bit precision.
  Slices with more than 12 stored bits are first scaled to 12 bits, and that scaling error is counted.
* JPEG 2000 lossy uses OpenJPEG's distortion target (imagecodecs ``level``: a PSNR in dB relative to the full
  ``2**bits - 1`` range). "JPEG 2000 50 dB" asks for 50 dB relative to the *slice's* R = max - min, the PSNR
  reported here: the level passed is ``50 + 20*log10((2**bits - 1) / R)``. Lossless is the reversible 5/3
  wavelet.
* JPEG-XL lossy is VarDCT at libjxl's default effort with Butteraugli ``distance`` d; lossless is modular.
* AVIF (aom, speed 6) codes monochrome as imagecodecs asks for it: gray replicated to three channels and
  ``pixelformat="400"``, ``bitspersample`` 8, 10 or 12 (a plain 2-D array would be coded losslessly; a 16-bit
  slice with more than 12 stored bits is scaled to 12 bits like JPEG, and that error is counted). ``level`` is
  aom's quality 0-100 (100 is lossless RGB, not offered).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np

Codestream = bytes | bytearray  # what imagecodecs returns
EncodeFn = Callable[[np.ndarray, int], Codestream]  # (pixels, bits) -> codestream
DecodeFn = Callable[[Codestream, int], np.ndarray]  # (codestream, bits) -> pixels

JPEG_QUALITIES = (50, 75, 90, 95)
J2K_TARGET_PSNR_DB = (40, 45, 50, 55, 60, 65, 70, 75)
JXL_DISTANCES = (4.0, 2.0, 1.0, 0.5, 0.35, 0.2, 0.1, 0.05)
AVIF_QUALITIES = (60, 75, 85, 90, 95, 97, 98, 99)
AVIF_SPEED = 6
JPEGLS_NEAR = (1, 2, 4, 8)  # the NEAR values the learned bounds are compared at


@dataclass(frozen=True)
class StandardCodec:
    """One standard codec at one setting."""

    name: str  # unique row label, e.g. "JPEG q75"
    family: str  # "JPEG", "JPEG 2000", ... (one line per family in the plot)
    lossless: bool
    encoder: EncodeFn
    decoder: DecodeFn

    def roundtrip(self, pixels: np.ndarray, bits: int) -> tuple[Codestream, np.ndarray, float, float]:
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


def _jpeg_encode(quality: int) -> EncodeFn:
    def encode(img: np.ndarray, bits: int) -> Codestream:
        if bits <= 8:
            return imagecodecs.jpeg8_encode(img.astype(np.uint8), level=quality)
        if bits > 12:  # scale to 12 bits; the scaling error is part of JPEG's error
            img = np.rint(img.astype(np.float64) * (4095 / ((1 << bits) - 1)))
        return imagecodecs.jpeg8_encode(img.astype(np.uint16), level=quality, bitspersample=12)

    return encode


def _jpeg_decode(stream: Codestream, bits: int) -> np.ndarray:
    out = imagecodecs.jpeg8_decode(stream)
    if bits > 12:
        return np.rint(out.astype(np.float64) * (((1 << bits) - 1) / 4095))
    return out


def _j2k_encode(target_db: float) -> EncodeFn:
    """OpenJPEG at a PSNR target relative to the slice's own range R (its ``level`` is relative to 2**bits - 1)."""

    def encode(img: np.ndarray, bits: int) -> Codestream:
        span = float(img.max()) - float(img.min())
        level = target_db + 20 * math.log10(((1 << bits) - 1) / span) if span > 0 else target_db
        # imagecodecs' annotation says int, but OpenJPEG's PSNR level is a float (fractional dB honoured)
        return imagecodecs.jpeg2k_encode(img, level=level, bitspersample=bits)  # type: ignore[arg-type]

    return encode


def _avif_bits(bits: int) -> int:
    return 8 if bits <= 8 else 10 if bits <= 10 else 12


def _avif_encode(quality: int) -> EncodeFn:
    def encode(img: np.ndarray, bits: int) -> Codestream:
        depth = _avif_bits(bits)
        if bits > 12:  # AV1 stops at 12 bits; the scaling error is part of AVIF's error
            img = np.rint(img.astype(np.float64) * (4095 / ((1 << bits) - 1)))
        gray = img.astype(np.uint8 if depth == 8 else np.uint16)
        rgb = np.repeat(gray[..., None], 3, axis=2)
        return imagecodecs.avif_encode(
            rgb, level=quality, speed=AVIF_SPEED, pixelformat="400", bitspersample=depth
        )

    return encode


def _avif_decode(stream: Codestream, bits: int) -> np.ndarray:
    out = imagecodecs.avif_decode(stream)
    out = out[..., 0] if out.ndim == 3 else out
    if bits > 12:
        return np.rint(out.astype(np.float64) * (((1 << bits) - 1) / 4095))
    return out


def _jpegls_near_encode(near: int) -> EncodeFn:
    return lambda img, bits: imagecodecs.jpegls_encode(img, level=near)


def _jxl_encode(distance: float) -> EncodeFn:
    return lambda img, bits: imagecodecs.jpegxl_encode(img, distance=distance, bitspersample=bits)


def _plain(decode: Callable[[Codestream], np.ndarray]) -> DecodeFn:
    """A decoder that needs no side information."""
    return lambda stream, bits: decode(stream)


def standard_codecs() -> list[StandardCodec]:
    """The comparison set (the paper's Table 5 codecs, JPEG-XL and AVIF, measured): order = table order."""
    out: list[StandardCodec] = []
    for q in JPEG_QUALITIES:
        out.append(StandardCodec(f"JPEG q{q}", "JPEG", False, _jpeg_encode(q), _jpeg_decode))
    for target in J2K_TARGET_PSNR_DB:
        out.append(
            StandardCodec(
                f"JPEG 2000 {target} dB", "JPEG 2000", False, _j2k_encode(target), _plain(imagecodecs.jpeg2k_decode)
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
                _jpegls_near_encode(near),
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
                _jxl_encode(distance),
                _plain(imagecodecs.jpegxl_decode),
            )
        )
    for quality in AVIF_QUALITIES:
        out.append(StandardCodec(f"AVIF q{quality}", "AVIF", False, _avif_encode(quality), _avif_decode))
    return out
