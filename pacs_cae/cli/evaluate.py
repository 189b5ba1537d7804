"""``pacs-cae evaluate`` (CAE vs standard codecs on the same slices) and ``pacs-cae export-model``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import require_extra


@app.command()
def evaluate(
    sources: list[Path] = typer.Argument(
        None, help="NIfTI volumes and/or DICOM folders (default: the held-out MNI152 2009a template)."
    ),
    model: str = typer.Option(
        "cae-paper", "--model", help="Model id under --models-dir (or a model directory)."
    ),
    models_dir: Path | None = typer.Option(
        None, "--models-dir", help="Default: $PACS_CAE_MODELS_DIR or models/."
    ),
    slices: int = typer.Option(
        16, "--slices", min=0, help="Evenly spaced non-empty slices per volume (0 = all)."
    ),
    size: int = typer.Option(
        512, "--size", min=0, help="NIfTI slices are resampled to SIZE x SIZE (0 = the volume's own grid)."
    ),
    bits: int = typer.Option(
        12, "--bits", min=2, max=16, help="NIfTI slices are quantised to BITS unsigned bits."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print everything (definitions, per-slice rows) as JSON."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write PSNR vs bpp for every codec to this PNG."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (for the CAE)."),
    standard: bool = typer.Option(True, "--standard/--no-standard", help="Also run the standard codecs."),
) -> None:
    """Measure the CAE through the real codec and standard codecs (imagecodecs) on the same slices.

    PSNR = 10*log10(R^2/MSE), R = max - min of the original slice; bpp = compressed bytes * 8 / pixels.
    See docs/evaluation.md for every definition.
    """
    require_extra("evaluate", "train", "nibabel", "scipy")
    from rich.console import Console

    from pacs_cae.codec import CodecError, load_codec
    from pacs_cae.train.eval_slices import load_eval_slices
    from pacs_cae.train.evaluate import report_dict, run_evaluation
    from pacs_cae.train.plots import plot_rate_distortion
    from pacs_cae.train.report import rich_table, run_settings

    console = Console(stderr=True, soft_wrap=True)
    if not sources:
        from pacs_cae.train.data import default_val_paths

        sources = default_val_paths()
    count = slices or None
    try:
        codec = load_codec(model, device=device, models_dir=models_dir)
    except CodecError as exc:
        console.print(f"[red]cannot load model {model!r}: {exc}")
        raise typer.Exit(2) from exc
    try:
        chosen = load_eval_slices(list(sources), count=count, size=size, bits=bits)
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"{len(chosen)} slices from {len(sources)} source(s); model {codec.model_id} on {codec.device}"
    )
    with console.status("evaluating") as status:
        results = run_evaluation(
            chosen,
            codec,
            standard=None if standard else [],
            progress=lambda name: status.update(f"evaluating {name}"),
        )
    settings = run_settings([str(s) for s in sources], model=model, slices=slices, size=size, bits=bits,
                            device=str(codec.device), models_dir=str(models_dir) if models_dir else None)
    command = settings["command"]
    if plot:
        plot_rate_distortion(
            results, plot, title=f"{codec.model_id} vs standard codecs, {len(chosen)} slices"
        )
        console.print(f"plot written to {plot}")
    if as_json:
        model_info = {
            "model_id": codec.model_id,
            "sha256": codec.weights_sha256,
            "trained": bool(codec.card.trained) if codec.card else None,
        }
        json.dump(report_dict(results, chosen, model=model_info, settings=settings), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        out = Console(width=None if sys.stdout.isatty() else 200)
        out.print(
            rich_table(results, title=f"{codec.model_id}: {len(chosen)} slices, {len(sources)} source(s)")
        )
        out.print(f"reproduce: {command}", soft_wrap=True)


@app.command("export-model")
def export_model(
    checkpoint: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="A training checkpoint (best.pt)."
    ),
    model_id: str = typer.Option(..., "--model-id", help="The new model's id (its directory name)."),
    models_dir: Path = typer.Option(Path("models"), "--models-dir"),
    run_dir: Path | None = typer.Option(
        None, "--run-dir", help="The run folder; its log.csv gives the curve."
    ),
    notes: str | None = typer.Option(None, "--notes", help="Free text for the model card."),
    evaluate_on: list[Path] = typer.Option(
        None, "--evaluate-on", help="Held-out NIfTI/DICOM to measure for the card (repeatable)."
    ),
    slices: int = typer.Option(16, "--slices", min=0, help="Slices per volume for --evaluate-on (0 = all)."),
    size: int = typer.Option(512, "--size", min=0, help="As for evaluate (0 = native grid)."),
    bits: int = typer.Option(12, "--bits", min=2, max=16),
    device: str = typer.Option("auto", "--device"),
    evaluate_held_out: bool = typer.Option(
        False,
        "--evaluate-held-out",
        help="Also measure on the checkpoint's own held-out volumes (val_names).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing model directory (see docs)."),
) -> None:
    """Write models/ID/{model.safetensors, card.json, README.md, learning_curve.png} from a checkpoint."""
    from rich.console import Console

    from pacs_cae.train.export import ExportError, export_checkpoint

    console = Console(stderr=True, soft_wrap=True)
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
