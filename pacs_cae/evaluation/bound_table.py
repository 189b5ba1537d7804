"""The error-bound table of a model card from ``pacs-cae evaluate --json`` output.

    python -m pacs_cae.evaluation.bound_table models/mshp-v2/evaluation_bounds.json

One row per bound delta: the learned codec's bpp under ``max_abs_error = delta`` beside JPEG-LS at NEAR = delta
(JPEG-LS lossless at 0), the measured worst error (which ``evaluate`` asserts is <= delta) and the mean
encode/decode time per slice; then the lossless codecs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bound_rows(report: dict) -> list[dict]:
    """Per bound: learned and JPEG-LS summaries (``None`` where JPEG-LS was not run at that NEAR)."""
    codecs = report["codecs"]
    jpegls = {0 if c["lossless"] else int(c["name"].rsplit(" ", 1)[-1]): c["summary"]
              for c in codecs if c["family"] in ("JPEG-LS near-lossless", "JPEG-LS lossless")}
    return [{"delta": c["max_abs_error_bound"], "learned": c["summary"], "jpegls": jpegls.get(c["max_abs_error_bound"])}
            for c in codecs if c.get("max_abs_error_bound") is not None]


def bound_markdown(report: dict) -> str:
    header = ("| max abs error bound | learned bpp | JPEG-LS bpp (NEAR = bound) | learned / JPEG-LS "
              "| measured max error | encode ms / slice | decode ms / slice |")
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in bound_rows(report):
        s, j = row["learned"], row["jpegls"]
        jpegls = f"{j['bpp']:.3f} | {s['bpp'] / j['bpp']:.3f}" if j else "- | -"
        lines.append(f"| {row['delta']} | {s['bpp']:.3f} | {jpegls} | {s['max_abs_error']:g} | "
                     f"{s['encode_ms']:.0f} | {s['decode_ms']:.0f} |")
    lossless = [c for c in report["codecs"] if c["lossless"] and c.get("max_abs_error_bound") is None]
    if lossless:
        lines += ["", "Lossless codecs on the same slices: " + ", ".join(
            f"{c['name']} {c['summary']['bpp']:.3f} bpp" for c in lossless) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(bound_markdown(json.loads(Path(args[0]).read_text())))


if __name__ == "__main__":
    main()
