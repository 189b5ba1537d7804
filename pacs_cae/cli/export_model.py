"""``pacs-cae export-model``: a training checkpoint becomes a model directory (weights, card, README, curve)
in the models directory ``serve`` reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import ConfigOption, ModelsDirOption, load_or_exit


@app.command("export-model")
def export_model(
    checkpoint: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="A training checkpoint (best.pt).")],
    model_id: Annotated[str, typer.Option("--model-id", help="The new model's id (its directory name).")],
    models_dir: ModelsDirOption = None,
    config: ConfigOption = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="The run folder; its log.csv gives the curve.")] = None,
    notes: Annotated[str | None, typer.Option("--notes", help="Free text for the model card.")] = None,
    evaluate_on: Annotated[list[Path] | None, typer.Option(
        "--evaluate-on", help="Held-out NIfTI/DICOM to measure for the card (repeatable).")] = None,
    slices: Annotated[int, typer.Option(
        "--slices", min=0, help="Slices per volume for --evaluate-on (0 = all).")] = 16,
    size: Annotated[int, typer.Option("--size", min=0, help="As for evaluate (0 = native grid).")] = 512,
    bits: Annotated[int, typer.Option("--bits", min=2, max=16)] = 12,
    device: Annotated[str, typer.Option("--device")] = "auto",
    evaluate_held_out: Annotated[bool, typer.Option(
        "--evaluate-held-out", help="Also measure on the checkpoint's own held-out volumes (val_names).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing model directory (see docs).")] = False,
) -> None:
    """Write models/ID/{model.safetensors, card.json, README.md, learning_curve.png} from a checkpoint."""
    from rich.console import Console

    from pacs_cae.codec.weights import default_models_dir
    from pacs_cae.train.export import ExportError, export_checkpoint

    console = Console(stderr=True, soft_wrap=True)
    # where serve looks for models: codec.models_dir (file, environment, --models-dir), else the default
    configured = load_or_exit("export-model", config, models_dir=models_dir).codec.models_dir
    models_dir = Path(configured) if configured else default_models_dir()
    try:
        out = export_checkpoint(
            checkpoint,
            model_id=model_id,
            models_dir=models_dir,
            run_dir=run_dir,
            notes=notes,
            evaluate_on=list(evaluate_on or []),
            slices=slices,
            size=size,
            bits=bits,
            device=device,
            force=force,
            evaluate_held_out=evaluate_held_out,
            progress=lambda msg: console.print(msg),
        )
    except ExportError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    console.print(f"exported {model_id} to {out.directory} (sha256 {out.card.sha256})")
    for path in out.files:
        console.print(f"  {path}")
