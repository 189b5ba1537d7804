"""Export an ``mshp`` training checkpoint as ``models/<id>/``: weights + integer entropy tables + card.

The tables are computed here, once, from the trained factorized prior and the fixed Gaussian scale table
(``codec.rd.tables``), and stored in the same safetensors file as the weights, so the card's sha256 covers
every number decoding depends on.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pacs_cae.codec.metrics import psnr
from pacs_cae.codec.rd.codec import ARCHITECTURE, entropy_tensors
from pacs_cae.codec.rd.network import MeanScaleHyperprior, RDConfig
from pacs_cae.codec.weights import CARD_FILE, ModelCard, save_model


def network_from_checkpoint(ckpt: dict) -> MeanScaleHyperprior:
    cfg = dict(ckpt["model_config"])
    cfg["lambdas"] = tuple(cfg["lambdas"])
    network = MeanScaleHyperprior(RDConfig(**cfg))
    network.load_state_dict({k: v.float() for k, v in ckpt["model"].items()}, strict=True)
    return network.eval()


def export_rd(ckpt: dict, directory: Path, *, model_id: str, checkpoint: Path, extra: dict) -> ModelCard:
    """Write the model directory; ``extra`` are the card's training facts (from ``train.export``)."""
    network = network_from_checkpoint(ckpt)
    config = dict(ckpt.get("config") or {})
    card_extra = {
        **extra,
        "description": (
            f"Mean-scale hyperprior (Minnen et al. 2018) with gain units, trained for rate + lambda * distortion "
            f"by `pacs-cae train --arch mshp` for {int(ckpt.get('step', 0))} steps; "
            f"{network.config.qualities} operating points (quality 1..{network.config.qualities})."
        ),
        "rd_config": asdict(network.config),
        "default_quality": network.config.qualities,
        "recipe": {k: config[k] for k in ("crop", "target", "batch_size", "lr", "min_lr", "warmup_steps", "steps",
                                          "max_minutes", "clip_grad", "seed", "val_every", "val_slices")
                   if k in config} | {
            "loss": "bpp + lambda * 4095^2 * MSE on [0, 1] slices, lambda drawn per crop from rd_config.lambdas",
            "optimizer": "Adam, linear warm-up then cosine decay over step or time progress",
            "augmentation": "pacs_cae.train.rd_data.RealisticCropSampler (Rician noise, bias field, contrast, "
                            "12-bit, native grid and resampled, all three planes)",
        },
        "best_val_rd_loss_during_training": ckpt.get("best_val_rd_loss"),
        "checkpoint": str(checkpoint),
    }
    card_extra.pop("best_val_psnr_db_during_training", None)
    card = save_model(network, directory, model_id=model_id, architecture=ARCHITECTURE, trained=True,
                      tensors=entropy_tensors(network), **card_extra)
    points = choose_operating_points(directory, validation_slices(config))
    card.extra["operating_points"] = points
    card.extra["default_quality"] = len(points)
    (directory / CARD_FILE).write_text(card.to_json())
    return card


#: PSNR targets (dB, R = max - min of the slice) of the residual operating points, above the learned one.
RESIDUAL_TARGETS_DB = (45.0, 49.0, 53.0, 57.0, 61.0, 65.0, 70.0)


def validation_slices(config: dict, count: int = 2) -> list[np.ndarray]:
    """Held-out validation slices as 12-bit integers (the run's own validation volumes, never the test MR)."""
    from pacs_cae.train.rd_data import rd_val_volumes, realistic_val_slices
    from pacs_cae.train.sources import load_sources

    files = [Path(n) for n in config.get("val_names", []) if Path(n).exists()]
    volumes = load_sources(files) if files else rd_val_volumes()
    slices = realistic_val_slices(volumes, count, int(config.get("target", 512)))
    return [np.round(s[0] * 4095).astype(np.uint16) for s in slices]


def choose_operating_points(directory: Path, slices: list[np.ndarray]) -> list[dict]:
    """Quality 1: the learned layer alone at its best validation trade-off (most dB per bit below the
    saturation); qualities 2..: each residual target on the base gain level that needs the fewest total bits
    on the validation slices (blob bits of the base + the residual's entropy-coded bits)."""
    from pacs_cae.codec.rd import residual
    from pacs_cae.codec.rd.codec import OperatingPoint, rd_codec_from_tensors
    from pacs_cae.codec.weights import load_checked

    tensors, card = load_checked(directory)
    codec = rd_codec_from_tensors(tensors, card, device="cpu", mode="fp32")
    pixels = sum(s.size for s in slices)
    bases = []
    for level in range(1, codec.model.config.qualities + 1):
        blobs = codec.encode(slices, bits_stored=12, quality=level)  # card without points: quality = level
        bases.append((level, 8 * sum(map(len, blobs)) / pixels, codec.decode(blobs)))
    psnrs = [float(np.mean([psnr(s, d, undefined=-math.inf) for s, d in zip(slices, dec)]))
             for _, _, dec in bases]
    learned = max(range(len(bases)), key=lambda i: psnrs[i] - 6.02 * bases[i][1])  # ~6 dB per bit
    points = [{"gain_level": bases[learned][0], "residual_db": None,
               "validation_psnr_db": round(psnrs[learned], 2), "validation_bpp": round(bases[learned][1], 4)}]
    for target in RESIDUAL_TARGETS_DB:
        best = None
        for level, base_bpp, decoded in bases:
            bits = 0.0
            for s, d in zip(slices, decoded):
                symbols, _ = residual.quantize_for_target(s.astype(np.int64) - d.astype(np.int64), target,
                                                          int(s.max()) - int(s.min()))
                bits += residual.coded_bits(symbols, codec.entropy.gaussian, codec.entropy.scales)
            total = base_bpp + bits / pixels
            if best is None or total < best[1]:
                best = (level, total)
        assert best is not None
        points.append({"gain_level": best[0], "residual_db": target, "validation_bpp_estimate": round(best[1], 4)})
    OperatingPoint.parse(points[0])  # the card's format is what the codec reads
    return points


def is_rd_checkpoint(ckpt: dict) -> bool:
    return "model_config" in ckpt and (ckpt.get("config") or {}).get("architecture") == ARCHITECTURE

