"""Turn a training checkpoint into a shipped model: ``models/<id>/`` that ``load_codec(id)`` loads.

The weights and ``card.json`` are written by the codec's own ``save_model`` (so the file layout and sha256 are
exactly what the codec verifies); this module adds the model card's training facts, the optional measured
evaluation on held-out data, the learning curve and a Markdown README.

An existing model directory is never replaced silently: blobs in an archive name a model id *and* its weights
hash, so overwriting ``models/<id>`` with other weights would make those blobs undecodable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pacs_cae.codec.model import build_model
from pacs_cae.codec.weights import CARD_FILE, ModelCard, save_model, validate_model_id
from pacs_cae.train.model_card import render_readme
from pacs_cae.train.rd_export import export_rd, is_rd_checkpoint

README_FILE = "README.md"
CURVE_FILE = "learning_curve.png"
EVALUATION_FILE = "evaluation.json"


class ExportError(Exception):
    """The checkpoint cannot be exported as asked (not a checkpoint, model exists, trained-on data)."""


@dataclass
class ExportResult:
    directory: Path
    card: ModelCard
    files: list[Path] = field(default_factory=list)


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``pacs_cae.train.loop`` (a local, trusted file: it needs full unpickling)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ExportError(f"{path}: not a pacs-cae training checkpoint (no 'model' state_dict)")
    return ckpt


def recipe(config: dict) -> dict:
    """The training recipe as the card states it."""
    keys = (
        "crop",
        "target",
        "batch_size",
        "lr",
        "min_lr",
        "warmup_steps",
        "loss",
        "steps",
        "latent_noise",
        "bf16",
        "seed",
        "val_every",
        "val_slices",
    )
    out = {k: config[k] for k in keys if k in config}
    if {"lr", "min_lr", "warmup_steps", "steps"} <= config.keys():
        out["schedule"] = (
            f"linear warm-up over {config['warmup_steps']} steps to lr {config['lr']}, then cosine decay to "
            f"{config['min_lr']} at step {config['steps']}"
        )
    out["optimizer"] = "Adam"
    out["augmentation"] = (
        "random crops of min/max-normalised slices (axial, coronal, sagittal), zoom, rotation, "
        "flips, gamma, Gaussian noise (pacs_cae.train.slices.CropSampler)"
    )
    return out


def describe_source(name: str) -> str:
    """A data path as a reader of the card can find it: inside a Python package, or as the absolute path."""
    path = Path(name)
    parts = path.parts
    if "site-packages" in parts:
        inner = parts[parts.index("site-packages") + 1:]
        return f"{inner[-1]} (Python package {inner[0]}: {'/'.join(inner[1:])})"
    if str(path).startswith("/usr/share/mricron/"):
        return f"{path.name} (Debian package mricron-data: {path})"
    return str(path)


def _check_held_out(evaluate_on: list[Path], train_names: list[str]) -> None:
    trained_on = {Path(n).resolve() for n in train_names}
    overlap = [str(p) for p in evaluate_on if Path(p).resolve() in trained_on]
    if overlap:
        raise ExportError(f"--evaluate-on volumes were used in training: {overlap}")


def export_checkpoint(
    checkpoint: Path,
    *,
    model_id: str,
    models_dir: Path,
    run_dir: Path | None = None,
    notes: str | None = None,
    evaluate_on: list[Path] | None = None,
    slices: int | None = 16,
    size: int = 512,
    bits: int = 12,
    device: str = "auto",
    force: bool = False,
    evaluate_held_out: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write ``models_dir/model_id`` from ``checkpoint``; see the module docstring."""
    say = progress or (lambda _msg: None)
    validate_model_id(model_id)
    directory = Path(models_dir) / model_id
    if directory.exists() and any(directory.iterdir()) and not force:
        raise ExportError(
            f"{directory} exists; archives may hold blobs made by it (use --force only if none do)"
        )
    ckpt = load_checkpoint(Path(checkpoint))
    config = dict(ckpt.get("config") or {})
    architecture = config.get("architecture", "cae-paper")
    evaluate_on = [Path(p) for p in (evaluate_on or [])]
    if evaluate_held_out:
        held_out = [Path(n) for n in config.get("val_names", [])]
        if not held_out:
            raise ExportError(f"{checkpoint}: its config names no held-out volumes (val_names)")
        evaluate_on += [p for p in held_out if p not in evaluate_on]
    _check_held_out(evaluate_on, config.get("train_names", []))
    missing = [str(p) for p in evaluate_on if not p.exists()]
    if missing:
        raise ExportError(f"evaluation sources not found: {missing}")
    steps = int(ckpt.get("step", 0))
    elapsed = float(ckpt.get("elapsed_s", 0.0))
    extra: dict[str, Any] = {
        "description": (
            f"The paper's CAE trained by `pacs-cae train` for {steps} steps."
            if steps
            else "UNTRAINED: exported from a checkpoint at step 0; not a usable codec."
        ),
        "training_data": [describe_source(n) for n in config.get("train_names", [])],
        "held_out_data": [describe_source(n) for n in config.get("val_names", [])],
        "recipe": recipe(config),
        "steps": steps,
        "training_hours": round(elapsed / 3600, 3),
        "device": str(ckpt.get("device", "unknown")),
        "torch": str(ckpt.get("torch", "unknown")),
        "checkpoint": str(checkpoint),
        "best_val_psnr_db_during_training": ckpt.get("best_val_psnr_db"),
        "psnr_db": None,
        "bpp": None,
        "evaluation": None,
    }
    if notes:
        extra["notes"] = notes
    if is_rd_checkpoint(ckpt):  # the rate-distortion family: weights + integer entropy tables
        card = export_rd(ckpt, directory, model_id=model_id, checkpoint=Path(checkpoint), extra=extra)
    else:
        network = build_model(architecture)
        network.load_state_dict({k: v.float() for k, v in ckpt["model"].items()}, strict=True)
        card = save_model(
            network, directory, model_id=model_id, architecture=architecture, trained=steps > 0, **extra
        )
    say(f"weights written: {directory} (sha256 {card.sha256})")
    files = [directory / "model.safetensors", directory / CARD_FILE]
    curve = None
    if run_dir is not None and (Path(run_dir) / "log.csv").exists():
        from pacs_cae.evaluation.plots import plot_learning_curve

        curve = plot_learning_curve(
            Path(run_dir) / "log.csv", directory / CURVE_FILE, title=f"{model_id}: {run_dir}"
        )
        files.append(curve)
    if evaluate_on:
        say(f"evaluating {model_id} on {[str(p) for p in evaluate_on]}")
        card.extra["evaluation"] = _evaluate(
            model_id, directory.parent, evaluate_on, slices, size, bits, device, directory / EVALUATION_FILE
        )
        cae = card.extra["evaluation"]["codecs"][0]["summary"]
        card.extra["psnr_db"], card.extra["bpp"] = cae["psnr_db"], cae["bpp"]
        files.append(directory / EVALUATION_FILE)
    (directory / CARD_FILE).write_text(card.to_json())
    (directory / README_FILE).write_text(render_readme(card, curve_file=CURVE_FILE if curve else None))
    files.append(directory / README_FILE)
    return ExportResult(directory, card, files)


def _evaluate(
    model_id: str,
    models_dir: Path,
    paths: list[Path],
    slices: int | None,
    size: int,
    bits: int,
    device: str,
    json_path: Path,
) -> dict:
    """Run the same evaluation as ``pacs-cae evaluate``; the full JSON goes beside the weights."""
    from pacs_cae.codec import load_codec
    from pacs_cae.evaluation.eval_slices import load_eval_slices
    from pacs_cae.evaluation.evaluate import report_dict, run_evaluation
    from pacs_cae.evaluation.report import markdown_table, run_settings

    codec = load_codec(model_id, device=device, models_dir=models_dir)
    chosen = load_eval_slices(paths, count=slices or None, size=size, bits=bits)
    results = run_evaluation(chosen, codec)
    settings = run_settings([str(p) for p in paths], model=model_id, slices=slices, size=size, bits=bits,
                            device=str(codec.device), models_dir=str(models_dir))
    command = settings["command"]
    full = report_dict(
        results, chosen, model={"model_id": model_id, "sha256": codec.weights_sha256}, settings=settings
    )
    json_path.write_text(json.dumps(full, indent=1) + "\n")
    return {
        "command": command,
        "slices": len(chosen),
        "device": str(codec.device),
        "table_markdown": markdown_table(results),
        "codecs": [
            {"name": c["name"], "lossless": c["lossless"], "summary": c["summary"]} for c in full["codecs"]
        ],
    }
