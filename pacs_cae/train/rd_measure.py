"""Measure an ``mshp`` model for its card: rate-distortion per quality on held-out real MR, and speed.

    python -m pacs_cae.train.rd_measure --model mshp-v1 [--models-dir models] [--speed] --package-mr
    python -m pacs_cae.train.rd_measure --model mshp-v1 DICOM_FOLDER_OR_NIFTI...

Rate: blob bytes x 8 / pixels (container included). PSNR with R = max - min of each slice, averaged over slices
(the project's definition, ``evaluation.metrics``). Beside each operating point: JPEG 2000 (OpenJPEG via imagecodecs,
``level`` = a PSNR target relative to BitsStored, 36..100 dB) at the same slices, interpolated to the same mean PSNR, so the card states the rate
the standard codec needs for that quality. ``--speed`` times encode and decode of 512x512 slices (entropy
coding included) on this machine's CPU threads. Prints Markdown tables and a JSON blob.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from pacs_cae.codec import load_codec
from pacs_cae.codec.metrics import psnr
from pacs_cae.codec.rd.codec import RDCodec
from pacs_cae.evaluation.eval_slices import load_eval_slices

#: Real scanner MR slices that ship inside installed Python packages' test data (package, relative path).
PACKAGE_MR = (
    ("pydicom", "data/test_files/examples_overlay.dcm"),  # Siemens abdominal MR, 300x484, 12-bit
    ("pydicom", "data/test_files/MR_small.dcm"),  # 64x64, 16-bit
    ("nibabel", "nicom/tests/data/slicethickness_empty_string.dcm"),  # Siemens, 384x384, JPEG 2000 lossless
)


def package_mr_folder() -> Path:
    """A temporary folder holding copies of :data:`PACKAGE_MR` (for ``load_eval_slices``)."""
    import importlib
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="package-mr-"))
    for package, relative in PACKAGE_MR:
        source = Path(str(importlib.import_module(package).__file__)).parent / relative
        shutil.copy(source, folder / source.name)
    return folder


def jpeg2000_curve(slices: list[np.ndarray], bits: list[int], targets: list[float]) -> list[tuple[float, float]]:
    """(mean PSNR, bpp) of JPEG 2000 at each OpenJPEG PSNR target (relative to BitsStored) over all slices."""
    import imagecodecs

    out = []
    pixels = sum(s.size for s in slices)
    for target in targets:
        total, scores = 0, []
        for s, b in zip(slices, bits):
            blob = imagecodecs.jpeg2k_encode(s, level=target, bitspersample=b)  # type: ignore[arg-type]  # float PSNR
            total += len(blob)
            scores.append(psnr(s, imagecodecs.jpeg2k_decode(blob), undefined=-math.inf))
        out.append((float(np.mean(scores)), 8 * total / pixels))
    return out


def interpolate_bpp(curve: list[tuple[float, float]], db: float) -> float | None:
    """bpp of a (PSNR, bpp) curve at ``db`` by log-linear interpolation; None outside its range."""
    pts = sorted(curve)
    for (d0, b0), (d1, b1) in itertools.pairwise(pts):
        if d0 <= db <= d1 and d1 > d0:
            t = (db - d0) / (d1 - d0)
            return float(np.exp(np.log(b0) + t * (np.log(b1) - np.log(b0))))
    return None


def rd_table(codec, slices: list[np.ndarray], bits: list[int]) -> list[dict]:
    pixels = sum(s.size for s in slices)
    rows = []
    for q in range(1, codec.qualities + 1):
        blobs = codec.encode(slices, bits_stored=bits, quality=q)
        decoded = codec.decode(blobs)
        scores = [psnr(s, d, undefined=-math.inf) for s, d in zip(slices, decoded)]
        worst = max(int(np.abs(s.astype(np.int64) - d.astype(np.int64)).max()) for s, d in zip(slices, decoded))
        finite = [v for v in scores if np.isfinite(v)]  # lossless slices: counted apart
        rows.append({"quality": q, "psnr_db": float(np.mean(finite)) if finite else float("inf"),
                     "min_psnr_db": float(np.min(scores)), "lossless_slices": len(scores) - len(finite),
                     "bpp": 8 * sum(map(len, blobs)) / pixels, "max_abs_error": worst})
    return rows


def markdown_table(table: list[dict]) -> str:
    rows = [("| quality | PSNR dB (mean of lossy slices) | min PSNR dB | lossless slices | bpp | worst abs error "
            "| JPEG 2000 bpp at that PSNR |"), "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        ref = r["jpeg2000_bpp_same_psnr"]
        rows.append(f"| {r['quality']} | {r['psnr_db']:.2f} | {r['min_psnr_db']:.2f} | {r['lossless_slices']} | "
                    f"{r['bpp']:.3f} | {r['max_abs_error']} | {'-' if ref is None else f'{ref:.3f}'} |")
    return "\n".join(rows)


def speed(codec, slice_: np.ndarray, quality: int, batch: int, repeats: int = 3) -> tuple[float, float]:
    """(encode, decode) slices per second, best of ``repeats``, 512x512, entropy coding included."""
    items = [slice_] * batch
    codec.decode(codec.encode(items, bits_stored=12, quality=quality))  # warm-up
    enc, dec = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        blobs = codec.encode(items, bits_stored=12, quality=quality)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        codec.decode(blobs)
        dec.append(time.perf_counter() - t)
    return batch / min(enc), batch / min(dec)


def jpeg2000_speed(slice_: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """(encode, decode) slices per second of OpenJPEG lossless on ``slice_``, best of ``repeats``."""
    import imagecodecs

    enc, dec = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        blob = imagecodecs.jpeg2k_encode(slice_, level=0, reversible=True)
        enc.append(time.perf_counter() - t)
        t = time.perf_counter()
        imagecodecs.jpeg2k_decode(blob)
        dec.append(time.perf_counter() - t)
    return 1 / min(enc), 1 / min(dec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", type=Path)
    parser.add_argument("--package-mr", action="store_true",
                        help="Measure on the real MR slices in installed packages' test data (PACKAGE_MR).")
    parser.add_argument("--model", default="mshp-v1")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--write-card", action="store_true",
                        help="Store the tables in the model's card.json and re-render its README.md.")
    parser.add_argument("--run-log", type=Path, default=None, help="The run's log.csv: plot the learning curve.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = load_codec(args.model, device="cpu", models_dir=args.models_dir, mode=args.mode)
    if not isinstance(codec, RDCodec):
        raise SystemExit(f"{args.model}: rd_measure measures a rate-distortion (mshp) model")
    sources = list(args.sources) + ([package_mr_folder()] if args.package_mr else [])
    if not sources:
        parser.error("give DICOM folders / NIfTI volumes, or --package-mr")
    chosen = load_eval_slices(sources, count=None, size=0, bits=12)
    slices = [c.pixels for c in chosen]
    bits = [c.bits_stored for c in chosen]
    table = rd_table(codec, slices, bits)
    j2k = jpeg2000_curve(slices, bits, list(range(36, 104, 4)))
    print(f"{len(slices)} slices from {sorted({c.source for c in chosen})}; model {codec.model_id} "
          f"({codec.weights_sha256[:12]}), mode {codec.mode}")
    for r in table:
        r["jpeg2000_bpp_same_psnr"] = interpolate_bpp(j2k, r["psnr_db"])
    print(markdown_table(table))
    out: dict = {"slices": len(slices), "sources": sorted({c.source for c in chosen}), "rd": table,
                 "jpeg2000": [{"psnr_db": d, "bpp": b} for d, b in j2k]}
    if args.speed:
        from scipy import ndimage

        largest = max(slices, key=lambda a: a.size)  # the real slice with the most detail, resampled
        big = ndimage.zoom(largest.astype(np.float32), 512 / max(largest.shape), order=1)
        big = np.clip(np.round(big), 0, 4095).astype(np.uint16)[:512, :512]
        big = np.pad(big, ((0, 512 - big.shape[0]), (0, 512 - big.shape[1])), mode="edge")
        print(f"\n| quality | batch | encode slices/s | decode slices/s |  ({args.threads} threads, 512x512)")
        print("|---:|---:|---:|---:|")
        out["speed"] = []
        for q in (1, codec.qualities or 1):
            for batch in (1, 4):
                e, d = speed(codec, big, q, batch)
                out["speed"].append({"quality": q, "batch": batch, "encode_per_s": e, "decode_per_s": d})
                print(f"| {q} | {batch} | {e:.1f} | {d:.1f} |")
        e, d = jpeg2000_speed(big)  # the same slice through OpenJPEG in the same run: the load reference
        out["speed"].append({"quality": "JPEG 2000 lossless (reference)", "batch": 1, "encode_per_s": e,
                             "decode_per_s": d})
        print(f"| JPEG 2000 lossless (reference) | 1 | {e:.1f} | {d:.1f} |")
    print("\n" + json.dumps(out))
    if args.write_card:
        write_card(codec, out, args)


def write_card(codec, out: dict, args: argparse.Namespace) -> None:
    """Put the measurement (and the learning curve) into models/<id>/: card.json (not hashed) and README.md."""
    import shlex
    import sys

    from pacs_cae.codec.weights import CARD_FILE, resolve_model_dir
    from pacs_cae.train.model_card import render_readme

    directory = resolve_model_dir(codec.model_id, args.models_dir)
    speed_rows = []
    if out.get("speed"):
        speed_rows = [(f"512x512, {args.threads} CPU threads, mode `{codec.mode}`, entropy coding and container "
                       "included, best of 3 (shared, noisy machine):"), "",
                      "| quality | batch | encode slices/s | decode slices/s |", "|---:|---:|---:|---:|"]
        speed_rows += [f"| {r['quality']} | {r['batch']} | {r['encode_per_s']:.1f} | {r['decode_per_s']:.1f} |"
                       for r in out["speed"]]
    card = codec.card
    card.extra["rd_measurement"] = {
        "text": (f"{out['slices']} slices of real clinical MR found in installed packages (never trained on): "
                 f"{', '.join(f'{p}/{r}' for p, r in PACKAGE_MR) if args.package_mr else out['sources']}; "
                 "native grid. PSNR with R = max - min of "
                 "each slice; bpp = blob bytes x 8 / pixels (container included); JPEG 2000 = OpenJPEG through "
                 "imagecodecs on the same slices, log-bpp interpolated to the same mean PSNR ('-': outside the "
                 "measured JPEG 2000 range)."),
        "table_markdown": markdown_table(out["rd"]),
        "speed_markdown": "\n".join(speed_rows),
        "command": "python -m pacs_cae.train.rd_measure " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "results": out,
    }
    curve = None
    if args.run_log is not None:
        curve = plot_curve(args.run_log, directory / "learning_curve.png", codec.qualities)
    (directory / CARD_FILE).write_text(card.to_json())
    (directory / "README.md").write_text(render_readme(card, curve_file=curve))


def plot_curve(log_csv: Path, png: Path, qualities: int) -> str:
    """Validation PSNR and bpp of every quality against the step (from the run's log.csv)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with log_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["val_rd_loss"]]
    steps = [int(r["step"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for q in range(1, qualities + 1):
        a.plot(steps, [float(r[f"val_q{q}_psnr_db"]) for r in rows], label=f"gain level {q}")
        b.plot(steps, [float(r[f"val_q{q}_bpp"]) for r in rows], label=f"gain level {q}")
    a.set(xlabel="step", ylabel="validation PSNR dB", title="held-out slices (estimated rate)")
    b.set(xlabel="step", ylabel="validation bpp (model estimate)")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return png.name


if __name__ == "__main__":
    main()
