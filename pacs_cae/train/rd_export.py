"""Export an ``mshp`` training checkpoint as ``models/<id>/``: weights + integer entropy tables + card.

The tables are computed here, once, from the trained factorized prior and the fixed Gaussian scale table
(``codec.rd.tables``), and stored in the same safetensors file as the weights, so the card's sha256 covers
every number decoding depends on.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pacs_cae.codec.rd.codec import ARCHITECTURE, entropy_tensors
from pacs_cae.codec.rd.network import MeanScaleHyperprior, RDConfig
from pacs_cae.codec.weights import ModelCard, save_model


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
    return save_model(network, directory, model_id=model_id, architecture=ARCHITECTURE, trained=True,
                      tensors=entropy_tensors(network), **card_extra)


def is_rd_checkpoint(ckpt: dict) -> bool:
    return "model_config" in ckpt and (ckpt.get("config") or {}).get("architecture") == ARCHITECTURE

