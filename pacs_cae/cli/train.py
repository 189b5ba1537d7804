"""``pacs-cae train``: train a CAE on DICOM folders and NIfTI volumes, resumable, in the background."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import require_extra


@app.command()
def train(
    sources: list[Path] = typer.Argument(None, help="NIfTI volumes and DICOM folders (default: the shipped set)."),
    val: list[Path] = typer.Option(None, "--val", help="Held-out volumes/folders (default: MNI152 2009a)."),
    run_dir: Path = typer.Option(Path("runs/cae-paper"), help="Checkpoints (last.pt, best.pt) and log.csv."),
    steps: int = typer.Option(4000, help="Total optimizer steps (the cosine schedule ends here)."),
    batch_size: int = typer.Option(16),
    crop: int = typer.Option(128, help="Random crop size (multiple of 32); 512 = the paper's full slices."),
    size: int = typer.Option(512, help="Slices are resampled so their longer side fills SIZE (the codec's size)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (the paper: 1e-4)."),
    loss: str = typer.Option("mse", help="mse | bce (the paper's)."),
    latent_noise: bool = typer.Option(True, help="Train with one quantisation step of latent noise."),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    bf16: bool = typer.Option(True, help="bf16 autocast (AVX-512 BF16 CPUs, CUDA)."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads."),
    val_every: int = typer.Option(200),
    val_slices: int = typer.Option(8, help="Held-out slices scored at each validation."),
    checkpoint_minutes: float = typer.Option(10.0),
    max_minutes: Optional[float] = typer.Option(None, help="Stop (with a checkpoint) after this long."),
    resume: bool = typer.Option(False, help="Continue from RUN_DIR/last.pt."),
    seed: int = typer.Option(0),
) -> None:
    """Train the paper's CAE on random crops; checkpoints and a CSV log go to RUN_DIR."""
    require_extra("train", "train", "nibabel", "scipy")
    from rich.console import Console

    from pacs_cae.train.data import default_train_paths, default_val_paths
    from pacs_cae.train.loop import TrainConfig
    from pacs_cae.train.loop import train as run_training
    from pacs_cae.train.sources import load_sources

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if loss not in ("mse", "bce"):
        raise typer.BadParameter("loss must be mse or bce")
    if crop % 32 or size % 32 or crop > size:
        raise typer.BadParameter("crop and size must be multiples of 32, crop <= size")
    train_paths = list(sources) if sources else default_train_paths()
    val_paths = list(val) if val else default_val_paths()
    overlap = {p.resolve() for p in train_paths} & {p.resolve() for p in val_paths}
    if overlap:
        raise typer.BadParameter(f"held-out volumes also in training: {sorted(map(str, overlap))}")
    console = Console(stderr=True)
    train_volumes, val_volumes = load_sources(train_paths), load_sources(val_paths)
    cfg = TrainConfig(
        run_dir=run_dir, steps=steps, batch_size=batch_size, crop=crop, target=size, lr=lr, loss=loss,
        latent_noise=latent_noise, device=device, bf16=bf16, threads=threads, val_every=val_every, val_slices=val_slices,
        checkpoint_minutes=checkpoint_minutes, max_minutes=max_minutes, seed=seed,
        train_names=[str(p) for p in train_paths], val_names=[str(p) for p in val_paths],
    )
    console.print(f"training on {[v.name for v in train_volumes]}, validating on {[v.name for v in val_volumes]}")
    last_val = {"v": "-"}

    def describe(row: dict) -> str:
        if row["val_psnr_quantized_db"]:
            last_val["v"] = row["val_psnr_quantized_db"]
        return (f"loss {row['loss']}  train {row['train_psnr_db']} dB  val(quantised) {last_val['v']} dB  "
                f"lr {row['lr']}  {row['elapsed_s']} s")

    if console.is_terminal:  # an interactive run: a live progress bar
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[status]}"), console=console) as bar:
            task = bar.add_task("train", total=steps, status="")

            def progress(row: dict) -> None:
                bar.update(task, completed=row["step"], status=describe(row))

            best = run_training(cfg, train_volumes, val_volumes, resume=resume, progress=progress)
    else:  # a background run writing a log file: one line every 10 steps and at each validation
        def progress(row: dict) -> None:
            line = describe(row)
            if row["step"] % 10 == 0 or row["val_psnr_quantized_db"]:
                console.print(f"step {row['step']}/{steps}  {line}")

        best = run_training(cfg, train_volumes, val_volumes, resume=resume, progress=progress)
    console.print(f"best checkpoint: {best}")
