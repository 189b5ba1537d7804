"""Stored bytes per slice and coding time of each exact (lossless) method of the archive, on real MR.

Run:  python benchmarks/lossless_methods.py [--model mshp-v1] [--synthetic 4] [--json]

Slices: the real clinical MR that ships in installed packages (pydicom, pydicom-data, nibabel:
``pacs_cae.evaluation.packaged_mr``; evaluation only, never training), every frame, plus ``--synthetic`` 512x512
12-bit phantom head slices (``pacs_cae.testing.factories``) with scanner-like Rician noise and bias field
(``pacs_cae.train.mr_realism``). Each slice goes through
``pacs_cae.codec.lossless.encode_lossless`` with one method at a time, and with the worker's choice
(``SMALLEST_METHODS``, smallest verified stream per frame), exactly as the archive stores it (container
header included), and is decoded again and compared byte for byte. ``--model``: also the learned codec at
``max_abs_error = 0`` when that model supports a bound (bytes = its stream inside the same container).

Columns: bits per pixel (blob bytes x 8 / pixels) and, in brackets, encode+verify ms per slice; the summary
row is total bytes over all slices and the ratio to JPEG-LS (the C-STORE fast path) measured in the same run.
Times are wall clock on this machine, one thread per codec (the shared 2-core box is noisy: compare ratios).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from pacs_cae.codec import lossless
from pacs_cae.codec.lossless import LearnedCandidate, PixelLayout, decode_lossless, encode_lossless
from pacs_cae.evaluation.packaged_mr import packaged_mr_files


def real_slices() -> list[tuple[str, np.ndarray, int]]:
    """(name, frame, bits stored) for every frame of every packaged real MR file."""
    out = []
    for path, what in packaged_mr_files():
        ds = pydicom.dcmread(path)
        array = ds.pixel_array
        frames = array.reshape(-1, *array.shape[-2:])
        for i, frame in enumerate(frames):
            name = f"{Path(path).name}" + (f"[{i}]" if len(frames) > 1 else "")
            out.append((f"{name} ({what.split(',')[0]})", np.ascontiguousarray(frame), int(ds.BitsStored)))
    return out


def synthetic_slices(count: int) -> list[tuple[str, np.ndarray, int]]:
    from pacs_cae.testing.factories import phantom_slice
    from pacs_cae.train.mr_realism import realistic_slice

    rng = np.random.default_rng(0)
    return [(f"phantom[{i}] 512x512, Rician noise", realistic_slice(phantom_slice(512, 512, i, count), rng)
             .astype(np.uint16), 12) for i in range(count)]


def _layout(frame: np.ndarray) -> PixelLayout:
    return PixelLayout(rows=frame.shape[0], columns=frame.shape[1], bits_allocated=8 * frame.itemsize,
                       pixel_representation=int(frame.dtype.kind == "i"))


def measure(frame: np.ndarray, methods: tuple[str, ...], learned: LearnedCandidate | None = None,
            learned_decode=None) -> tuple[int, float, str]:
    """(blob bytes, encode ms, methods used) for one slice; the blob is checked to decode exactly."""
    data = frame.astype(frame.dtype.newbyteorder("<")).tobytes()
    start = time.perf_counter()
    blob = encode_lossless(data, _layout(frame), methods=methods, learned=learned)
    ms = 1000 * (time.perf_counter() - start)
    if decode_lossless(blob, learned=learned_decode) != data:
        raise AssertionError("lossless blob does not decode to the original bytes")
    return len(blob), ms, "+".join(sorted(set(lossless.frame_methods(blob))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=4, help="512x512 phantom slices to add (0: none)")
    parser.add_argument("--model", default=None, help="learned codec to try at max_abs_error = 0")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--jpegxl-efforts", default="",
                        help="also sweep JPEG-XL effort levels, e.g. 3,5,7 (total bytes, mean ms per slice)")
    args = parser.parse_args()

    slices = real_slices() + synthetic_slices(args.synthetic)
    if args.jpegxl_efforts:
        default = lossless.JPEGXL_EFFORT
        print("| JPEG-XL effort | total bytes | vs JPEG-LS | mean ms per slice |\n|---:|---:|---:|---:|")
        reference = sum(measure(frame, ("jpeg-ls",))[0] for _, frame, _ in slices)
        for effort in (int(e) for e in args.jpegxl_efforts.split(",")):
            lossless.JPEGXL_EFFORT = effort
            sizes, times = zip(*(measure(frame, ("jpeg-xl",))[:2] for _, frame, _ in slices))
            print(f"| {effort}{' (default)' if effort == default else ''} | {sum(sizes):,} | "
                  f"{sum(sizes) / reference:.3f} | {sum(times) / len(times):.0f} |")
        lossless.JPEGXL_EFFORT = default
        print()
    columns: list[tuple[str, tuple[str, ...]]] = [(m, (m,)) for m in lossless.STANDARD_METHODS
                                                  if lossless._AVAILABLE[m]]
    columns.append(("smallest", lossless.SMALLEST_METHODS))
    codec: Any = None
    if args.model:
        from pacs_cae.codec import load_codec

        codec = load_codec(args.model, "cpu")
        if not getattr(codec, "supports_max_abs_error", False):
            print(f"model {args.model} has no error bound; its column is left out", file=sys.stderr)
            codec = None
    rows = []
    for name, frame, bits in slices:
        row: dict = {"slice": name, "pixels": int(frame.size), "bits_stored": bits}
        for label, methods in columns:
            size, ms, used = measure(frame, methods)
            row[label] = {"bytes": size, "bpp": 8 * size / frame.size, "ms": ms, "used": used}
        if codec is not None:
            start = time.perf_counter()
            streams = codec.encode([frame], bits_stored=bits, max_abs_error=0)
            decoded = codec.decode(streams)
            enc_ms = 1000 * (time.perf_counter() - start)
            size, ms, used = measure(frame, (), LearnedCandidate(streams, decoded), codec.decode)
            row["learned"] = {"bytes": size, "bpp": 8 * size / frame.size, "ms": ms + enc_ms, "used": used}
            size, ms, used = measure(frame, lossless.SMALLEST_METHODS, LearnedCandidate(streams, decoded),
                                     codec.decode)
            row["smallest+learned"] = {"bytes": size, "bpp": 8 * size / frame.size, "ms": ms + enc_ms, "used": used}
        rows.append(row)
    labels = [label for label in rows[0] if isinstance(rows[0][label], dict)]
    totals = {label: sum(r[label]["bytes"] for r in rows) for label in labels}
    times = {label: sum(r[label]["ms"] for r in rows) / len(rows) for label in labels}
    if args.json:
        print(json.dumps({"slices": rows, "total_bytes": totals, "mean_ms": times}, indent=1))
        return 0
    print("| slice | " + " | ".join(f"{label} bpp (ms)" for label in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for r in rows:
        cells = [f"{r[label]['bpp']:.3f} ({r[label]['ms']:.0f})" for label in labels]
        print(f"| {r['slice']} | " + " | ".join(cells) + " |")
    reference = totals.get("jpeg-ls") or 1
    print("| **total bytes / vs JPEG-LS** | " + " | ".join(
        f"{totals[label]:,} / {totals[label] / reference:.3f}" for label in labels) + " |")
    print("| **mean ms per slice** | " + " | ".join(f"{times[label]:.0f}" for label in labels) + " |")
    for label in (label for label in labels if label.startswith("smallest")):
        wins = {m: sum(1 for r in rows if r[label]["used"] == m) for m in sorted({r[label]["used"] for r in rows})}
        print(f"{label}: chosen per slice {wins}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
