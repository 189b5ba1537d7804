"""Choose the learned layer's gain level for each ``max_abs_error`` bound: the one with the fewest total bits.

Measured on the held-out synthetic validation volume only (``rd_data.RD_VAL_NAMES``: axial validation slices and
realistic full slices, native grid and resampled), never on clinical MR. Writes ``bound_gain_levels`` (delta ->
gain level) and the measurement into the model card::

    python -m pacs_cae.train.rd_bound --model mshp-v2 --models-dir models --levels 1,2,3 --write-card
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pacs_cae.codec import load_codec
from pacs_cae.codec.normalize import normalize_slice
from pacs_cae.codec.rd.codec import RDCodec
from pacs_cae.codec.rd.network import DOWNSCALE

DELTAS = (0, 1, 2, 4, 8)


def validation_slices(count: int = 8, seed: int = 5) -> list[np.ndarray]:
    """12-bit realistic slices of the validation volume: half fixed axial slices, half sampled full slices."""
    from pacs_cae.train.rd_data import RealisticCropSampler, rd_val_volumes, realistic_val_slices

    volumes = rd_val_volumes()
    fixed = [v[0] for v in realistic_val_slices(volumes, count // 2, 512)]
    sampler = RealisticCropSampler(volumes, seed=seed)
    sampled = [sampler.full_slice() for _ in range(count - count // 2)]
    return [np.rint(s * 4095).astype(np.uint16) for s in fixed + sampled]


def measure(codec: RDCodec, slices: list[np.ndarray], deltas: tuple[int, ...] = DELTAS,
            levels: list[int] | None = None) -> dict[int, dict[int, float]]:
    """Mean bpp (blob bytes x 8 / pixels) per delta and gain level (each slice keeping the smaller of with and
    without the learned layer, as the codec does), and at level 0 without the learned layer on every slice."""
    from pacs_cae.codec.rd.codec import NO_LEARNED_LAYER

    assert codec.card is not None
    saved = codec.card.extra.get("bound_gain_levels")
    out: dict[int, dict[int, float]] = {}
    try:
        for delta in deltas:
            plan = codec.plan(None, delta)
            alone = [codec._encode_with(normalize_slice(s, 12, DOWNSCALE), s, plan, NO_LEARNED_LAYER)
                     for s in slices]
            out[delta] = {0: float(np.mean([8 * len(b) / s.size for b, s in zip(alone, slices)]))}
            for level in levels or range(1, codec.model.config.qualities + 1):
                codec.card.extra["bound_gain_levels"] = {"0": level}
                blobs = codec.encode(slices, bits_stored=12, max_abs_error=delta)
                out[delta][level] = float(np.mean([8 * len(b) / s.size for b, s in zip(blobs, slices)]))
    finally:
        codec.card.extra["bound_gain_levels"] = saved
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mshp-v1")
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--levels", default="", help="comma-separated gain levels to try (default: all)")
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args(argv)
    codec = load_codec(args.model, device="cpu", models_dir=args.models_dir)
    assert isinstance(codec, RDCodec)
    levels = [int(v) for v in args.levels.split(",") if v] or None
    table = measure(codec, validation_slices(args.slices), levels=levels)
    choice = {str(d): min((g for g in row if g), key=row.__getitem__) for d, row in table.items()}
    print(json.dumps({"bpp": table, "bound_gain_levels": choice}, indent=1))
    if args.write_card:
        path = Path(args.models_dir) / args.model / "card.json"
        card = json.loads(path.read_text())
        card["bound_gain_levels"] = choice
        card["bound_gain_levels_measurement"] = {
            "text": f"mean bpp per max_abs_error (rows) and gain level (columns; each slice keeps the smaller "
                    "of with and without the learned layer; 0 = never the learned layer) on "
                    f"{args.slices} realistic 12-bit slices of the held-out validation volume (mni152-pdlike); "
                    "the gain level with the fewest bits wins",
            "command": f"python -m pacs_cae.train.rd_bound --model {args.model} --models-dir {args.models_dir} "
                       + (f"--levels {args.levels} " if args.levels else "") + "--write-card",
            "bpp": {str(d): {str(g): round(v, 4) for g, v in row.items()} for d, row in table.items()},
        }
        path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
