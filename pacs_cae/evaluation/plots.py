"""PNG figures: rate-distortion (PSNR vs bpp) of an evaluation, and a training run's learning curve.

matplotlib runs with the non-interactive Agg backend so this works on a headless server.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pacs_cae.evaluation.evaluate import LEARNED_FAMILY, CodecResult

#: The paper's claim the shipped model is measured against (issue 4): mean PSNR >= 37 dB at <= 2.2 bpp.
PAPER_TARGET_PSNR_DB = 37.0
PAPER_TARGET_BPP = 2.2


STANDARD_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                    "tab:cyan", "tab:gray"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rate_distortion(results: Sequence[CodecResult], path: Path, title: str = "") -> Path:
    """Mean PSNR vs bpp, one line per lossy family, the learned codec's operating points as stars joined by a
    line, lossless codecs as vertical lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=120)
    families: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    lossless_styles = iter(["--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))] * 4)
    colours = iter(STANDARD_COLOURS * 4)  # no red: red is the learned codec
    for r in results:
        s = r.summary()
        if r.lossless or math.isinf(s["psnr_db"]):
            ax.axvline(
                s["bpp"],
                linestyle=next(lossless_styles),
                color="dimgrey",
                linewidth=1.2,
                label=f"{r.name} (exact): {s['bpp']:.2f} bpp",
            )
        else:
            families[r.family].append((s["bpp"], s["psnr_db"], r.name))
    for family, points in families.items():
        points.sort()
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        if family == LEARNED_FAMILY:
            if len(points) > 1:
                ax.plot(xs, ys, color="crimson", linewidth=1.5, zorder=4)
            label = points[0][2] if len(points) == 1 else f"{points[0][2].rsplit(' q', 1)[0]} ({len(points)} points)"
            ax.scatter(xs, ys, marker="*", s=200, color="crimson", zorder=5, label=label)
            for x, y, name in points:
                ax.annotate(
                    f"{name}\n{y:.1f} dB @ {x:.2f} bpp" if len(points) == 1 else name.rsplit(" ", 1)[-1],
                    (x, y),
                    textcoords="offset points",
                    xytext=(8, 6) if len(points) == 1 else (4, -10),
                    fontsize=8,
                    color="crimson",
                )
        else:
            ax.plot(xs, ys, marker="o", markersize=4, label=family, color=next(colours))
    ax.scatter(
        [PAPER_TARGET_BPP],
        [PAPER_TARGET_PSNR_DB],
        marker="P",
        s=90,
        facecolors="none",
        edgecolors="black",
        label=f"paper's claim: {PAPER_TARGET_PSNR_DB:g} dB at {PAPER_TARGET_BPP:g} bpp",
    )
    ax.set_xlabel("bits per pixel (compressed bytes x 8 / pixels)")
    ax.set_ylabel("mean PSNR, dB (R = max - min of each original slice)")
    ax.set_title(title or "Rate-distortion on the same slices")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)


def bound_points(results: Sequence[CodecResult]) -> dict[str, list[tuple[int, float]]]:
    """(max abs error, bpp) per curve: the learned bound points and JPEG-LS (near-lossless + lossless at 0)."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        bpp = r.summary()["bpp"]
        if r.bound is not None:
            curves[r.name.rsplit(" bound", 1)[0] + " (guaranteed bound)"].append((r.bound, bpp))
        elif r.family in ("JPEG-LS near-lossless", "JPEG-LS lossless"):
            near = 0 if r.lossless else int(r.name.rsplit(" ", 1)[-1])
            curves["JPEG-LS (NEAR)"].append((near, bpp))
    return {name: sorted(points) for name, points in curves.items()}


def plot_bounds(results: Sequence[CodecResult], path: Path, title: str = "") -> Path:
    """bpp against the guaranteed max |error| delta: the learned bound vs JPEG-LS at NEAR = delta, the
    other lossless codecs as horizontal lines at delta = 0."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for (name, points), colour in zip(bound_points(results).items(), ["crimson", *STANDARD_COLOURS]):
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color=colour, label=name)
    styles = iter(["--", ":", "-.", (0, (5, 1, 1, 1))] * 4)
    for r in results:
        if r.lossless and r.bound is None and r.family != "JPEG-LS lossless":
            ax.axhline(r.summary()["bpp"], color="dimgrey", linestyle=next(styles), linewidth=1,
                       label=f"{r.name}: {r.summary()['bpp']:.2f} bpp")
    ax.set_xlabel("max |original - decoded| (delta; 0 = lossless)")
    ax.set_ylabel("bits per pixel (compressed bytes x 8 / pixels)")
    ax.set_title(title or "Near-lossless: bits against the error bound")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path | str) -> Path:
    """Lay out, write (creating the folder) and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def read_log(log_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """Series of (step, value) from a training log.csv, sorted by step, skipping empty cells.

    A resumed run re-logs the steps after its last checkpoint; the later row for a step wins.
    """
    by_key: dict[str, dict[int, float]] = defaultdict(dict)
    with open(log_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(row["step"])
            except (TypeError, ValueError):
                continue
            for key, value in row.items():
                if key == "step" or value in ("", None):
                    continue
                try:
                    by_key[key][step] = float(value)
                except ValueError:
                    continue
    return {key: sorted(values.items()) for key, values in by_key.items()}


def plot_learning_curve(log_csv: Path, path: Path, title: str = "") -> Path:
    """Training loss (log scale) and validation PSNR (float and quantised latent) against step."""
    plt = _pyplot()
    series = read_log(log_csv)
    fig, (ax_loss, ax_psnr) = plt.subplots(2, 1, figsize=(8, 7), dpi=120, sharex=True)
    if series.get("loss"):
        steps, values = zip(*series["loss"], strict=True)
        ax_loss.plot(steps, values, linewidth=0.6, alpha=0.5, label="loss (per batch)")
        window = max(1, len(values) // 50)
        smooth = [
            sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        ax_loss.plot(steps, smooth, linewidth=1.5, label=f"loss (mean of {window})")
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(True, alpha=0.3)
    labels = {
        "train_psnr_db": "train crops (float)",
        "val_psnr_db": "held-out slices (float latent)",
        "val_psnr_quantized_db": "held-out slices (8-bit latent, as stored)",
    }
    for key, label in labels.items():
        if series.get(key):
            steps, values = zip(*series[key], strict=True)
            style = (
                {"linewidth": 0.5, "alpha": 0.4}
                if key == "train_psnr_db"
                else {"marker": "o", "markersize": 3}
            )
            ax_psnr.plot(steps, values, label=label, **style)
    ax_psnr.set_xlabel("optimizer step")
    ax_psnr.set_ylabel("PSNR, dB (R = 1 on min/max-normalised slices)")
    ax_psnr.legend(fontsize=8)
    ax_psnr.grid(True, alpha=0.3)
    fig.suptitle(title or f"Learning curve: {log_csv}")
    return _save(fig, path)
