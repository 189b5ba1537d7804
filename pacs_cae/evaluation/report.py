"""Human-readable evaluation output: the Rich summary table and its Markdown twin for model cards."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pacs_cae.evaluation.evaluate import LEARNED_FAMILY, CodecResult
from pacs_cae.evaluation.metrics import DEFINITIONS

COLUMNS = (
    ("codec", "codec"),
    ("psnr_db", "PSNR dB"),
    ("psnr_fg_db", "PSNR fg dB"),
    ("mse", "MSE"),
    ("max_abs_error", "max abs err"),
    ("bpp", "bpp"),
    ("ratio_stored", "ratio (stored)"),
    ("ratio_float32", "ratio (float32)"),
    ("encode_ms", "enc ms"),
    ("decode_ms", "dec ms"),
)


def fmt(key: str, value: float) -> str:
    """Compact, column-appropriate formatting; +inf PSNR reads ``inf``."""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if key in ("psnr_db", "psnr_fg_db", "ratio_stored", "ratio_float32"):
        return f"{value:.2f}"
    if key == "bpp":
        return f"{value:.3f}"
    if key in ("mse", "max_abs_error"):
        return f"{value:.4g}"
    return f"{value:.1f}"


def summary_rows(results: Sequence[CodecResult]) -> list[list[str]]:
    rows = []
    for r in results:
        s = r.summary()
        rows.append([r.name + (" (lossless)" if r.lossless else "")] + [fmt(k, s[k]) for k, _ in COLUMNS[1:]])
    return rows


def rich_table(results: Sequence[CodecResult], title: str):
    from rich.table import Table

    table = Table(title=title, caption=definitions_text(), caption_justify="left")
    for i, (_, label) in enumerate(COLUMNS):
        table.add_column(label, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row, r in zip(summary_rows(results), results, strict=True):
        table.add_row(*row, style="bold" if r.family == LEARNED_FAMILY else None)
    return table


def markdown_table(results: Sequence[CodecResult]) -> str:
    header = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"
    body = ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    return "\n".join([header, rule, *body])


def bd_rate_rows(section: dict) -> list[list[str]]:
    """One row per reference of a ``bd_rate_section``: reference, BD-rate, PSNR interval, note."""
    rows = []
    for entry in section.get("against", []):
        value = entry["bd_rate_percent"]
        interval = (
            f"{entry['psnr_low_db']:.1f}-{entry['psnr_high_db']:.1f}" if entry["psnr_low_db"] is not None else "-"
        )
        rows.append([entry["reference"], "n/a" if value is None else f"{value:+.1f} %", interval,
                     entry["reason"] or ""])
    return rows


BD_COLUMNS = ("learned codec against", "BD-rate", "PSNR dB", "note")


def bd_rate_table(section: dict):
    """The BD-rate section as a Rich table (negative = fewer bits than the reference at equal PSNR)."""
    from rich.table import Table

    table = Table(title="BD-rate of the learned codec (negative = fewer bits at equal PSNR)")
    for i, label in enumerate(BD_COLUMNS):
        table.add_column(label, justify="right" if i in (1, 2) else "left")
    for row in bd_rate_rows(section):
        table.add_row(*row)
    if section.get("reason"):
        table.caption = section["reason"]
    return table


def bd_rate_markdown(section: dict) -> str:
    header = "| " + " | ".join(BD_COLUMNS) + " |"
    body = ["| " + " | ".join(row) + " |" for row in bd_rate_rows(section)]
    return "\n".join([header, "|---|---:|---:|---|", *body])


def definitions_text() -> str:
    return "\n".join(f"{k}: {v}" for k, v in DEFINITIONS.items())


def reproduce_command(
    sources: Sequence[str],
    *,
    model: str,
    slices: int | None,
    size: int,
    bits: int,
    models_dir: str | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The exact ``pacs-cae evaluate`` command line that recomputes a summary (``extra``: further arguments).

    Sources equal to the default held-out set and a models dir equal to the default are left out, so the
    command stays valid on another installation (``evaluate`` with no SOURCES uses the same held-out volume).
    """
    import shlex
    from pathlib import Path

    from pacs_cae.codec.weights import default_models_dir

    parts = ["pacs-cae", "evaluate"]
    if not _is_default_held_out(sources):
        parts += [str(s) for s in sources]
    parts += ["--model", model]
    if models_dir and Path(models_dir).resolve() != default_models_dir().resolve():
        parts += ["--models-dir", str(models_dir)]
    parts += ["--slices", str(slices if slices is not None else 0), "--size", str(size), "--bits", str(bits)]
    return shlex.join([*parts, *extra])


def run_settings(
    sources: Sequence[str], *, model: str, slices: int | None, size: int, bits: int, device: str,
    models_dir: str | None = None, extra: Sequence[str] = (),
) -> dict:
    """The settings block of an evaluation report, with the command that reproduces it."""
    return {
        "sources": [str(s) for s in sources],
        "slices_per_volume": slices,
        "size": size,
        "bits": bits,
        "device": device,
        "command": reproduce_command(sources, model=model, slices=slices, size=size, bits=bits,
                                     models_dir=models_dir, extra=extra),
    }


def _is_default_held_out(sources: Sequence[str]) -> bool:
    from pathlib import Path

    try:
        from pacs_cae.train.data import default_val_paths

        defaults = [p.resolve() for p in default_val_paths()]
    except (FileNotFoundError, ImportError):
        return False
    return [Path(s).resolve() for s in sources] == defaults
