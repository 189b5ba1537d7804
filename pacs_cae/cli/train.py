"""``pacs-cae train``: train a CAE on DICOM folders and NIfTI volumes, resumable, in the background."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pacs_cae.cli.app import app
from pacs_cae.cli.options import configure_logging, require_extra


@app.command()
def train(
    sources: Annotated[list[Path] | None, typer.Argument(
        help="NIfTI volumes and DICOM folders (default: the shipped set).")] = None,
    val: Annotated[list[Path] | None, typer.Option(
        "--val", help="Held-out volumes/folders (default: MNI152 2009a).")] = None,
    arch: Annotated[str, typer.Option(
        "--arch", help="cae-paper (the paper's CAE) | mshp (rate-distortion).")] = "cae-paper",
    run_dir: Annotated[Path | None, typer.Option(
        help="Checkpoints and log.csv (default: runs/<arch>).")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Total optimizer steps (cae-paper 4000, mshp 20000).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Crops per step (cae-paper 16, mshp 8).")] = None,
    crop: Annotated[int, typer.Option(
        help="Random crop size (multiple of 32); 512 = the paper's full slices.")] = 128,
    size: Annotated[int, typer.Option(
        help="Slices are resampled so their longer side fills SIZE (the codec's size).")] = 512,
    lr: Annotated[float | None, typer.Option(
        help="Peak learning rate (cae-paper 1e-3, the paper 1e-4; mshp 3e-4).")] = None,
    loss: Annotated[str, typer.Option(help="mse | bce (the paper's).")] = "mse",
    latent_noise: Annotated[bool, typer.Option(
        help="Train with one quantisation step of latent noise.")] = True,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    bf16: Annotated[bool, typer.Option(help="bf16 autocast (AVX-512 BF16 CPUs, CUDA).")] = True,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    val_every: Annotated[int | None, typer.Option(
        help="Steps between validations (cae-paper 200, mshp 250).")] = None,
    val_slices: Annotated[int | None, typer.Option(
        help="Held-out slices scored at each validation (8 / 4).")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option(
        help="Minutes between checkpoints (10 / 5).")] = None,
    max_minutes: Annotated[float | None, typer.Option(
        help="Stop (with a checkpoint) after this long.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from RUN_DIR/last.pt.")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a codec network on random crops (``--arch``); checkpoints and a CSV log go to RUN_DIR."""
    require_extra("train", "train", "nibabel", "scipy")
    from rich.console import Console

    if arch == "mshp":
        return _train_rd(sources, val, run_dir, steps, batch_size, crop, size, lr, device, threads, val_every,
                         val_slices, checkpoint_minutes, max_minutes, resume, seed)
    if arch != "cae-paper":
        raise typer.BadParameter(f"unknown architecture {arch!r}; choose cae-paper or mshp", param_hint="--arch")
    run_dir = run_dir or Path("runs/cae-paper")
    steps = steps or 4000
    batch_size = batch_size or 16
    lr = lr or 1e-3
    val_every = val_every or 200
    val_slices = val_slices or 8
    checkpoint_minutes = checkpoint_minutes or 10.0

    from pacs_cae.train.data import default_train_paths, default_val_paths
    from pacs_cae.train.loop import TrainConfig
    from pacs_cae.train.loop import train as run_training
    from pacs_cae.train.sources import load_sources

    configure_logging("INFO")
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

    best = _with_progress(console, steps, describe, "val_psnr_quantized_db",
                          lambda progress: run_training(cfg, train_volumes, val_volumes, resume=resume,
                                                        progress=progress))
    console.print(f"best checkpoint: {best}")


def _with_progress(console: Any, steps: int, describe: Callable[[dict], str], val_key: str,
                   run: Callable[[Callable[[dict], None]], Path]) -> Path:
    """Run ``run(progress)`` with a live bar on a terminal, else one log line every 10 steps and validation."""
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[status]}"), console=console) as bar:
            task = bar.add_task("train", total=steps, status="")
            return run(lambda row: bar.update(task, completed=row["step"], status=describe(row)))

    def progress(row: dict) -> None:
        if row["step"] % 10 == 0 or row[val_key]:
            console.print(f"step {row['step']}/{steps}  {describe(row)}")

    return run(progress)


def _train_rd(sources: list[Path] | None, val: list[Path] | None, run_dir: Path | None,
              steps: int | None, batch_size: int | None, crop: int, size: int, lr: float | None,
              device: str, threads: int | None, val_every: int | None, val_slices: int | None,
              checkpoint_minutes: float | None, max_minutes: float | None, resume: bool, seed: int) -> None:
    """``--arch mshp``: rate-distortion training on realistic MR crops (``pacs_cae.train.rd_loop``)."""
    from rich.console import Console

    from pacs_cae.train.rd_data import RD_TRAIN_FILES, RD_VAL_NAMES, rd_train_volumes, rd_val_volumes
    from pacs_cae.train.rd_loop import RDTrainConfig, train_rd
    from pacs_cae.train.sources import load_sources

    configure_logging("INFO")
    if crop % 64 or size % 64 or crop > size:
        raise typer.BadParameter("for mshp, crop and size must be multiples of 64, crop <= size")
    train_volumes = load_sources(list(sources)) if sources else rd_train_volumes()
    val_volumes = load_sources(list(val)) if val else rd_val_volumes()
    clash = {v.name for v in train_volumes} & {v.name for v in val_volumes}
    if clash:
        raise typer.BadParameter(f"held-out volumes also in training: {sorted(clash)}")
    base = RDTrainConfig()
    cfg = RDTrainConfig(
        run_dir=run_dir or Path("runs/mshp"), steps=steps or base.steps, batch_size=batch_size or base.batch_size,
        crop=crop, target=size, lr=lr or base.lr, device=device, threads=threads,
        val_every=val_every or base.val_every, val_slices=val_slices or base.val_slices,
        checkpoint_minutes=checkpoint_minutes or base.checkpoint_minutes, max_minutes=max_minutes, seed=seed,
        train_names=[str(p) for p in sources] if sources else [*RD_TRAIN_FILES, "nilearn MNI152 2009a T1, T2-like"],
        val_names=[str(p) for p in val] if val else list(RD_VAL_NAMES),
    )
    console = Console(stderr=True)
    console.print(f"training mshp on {[v.name for v in train_volumes]}, validating on "
                  f"{[v.name for v in val_volumes]}")
    last = {"v": "-"}

    def describe(row: dict) -> str:
        if row["val_rd_loss"]:
            last["v"] = " ".join(f"{row[f'val_q{q}_bpp']}/{row[f'val_q{q}_psnr_db']}" for q in (1, 4, 8))
        return (f"loss {row['loss']}  bpp {row['train_bpp']}  psnr {row['train_psnr_db']} dB  "
                f"val q1/q4/q8 bpp/dB {last['v']}  lr {row['lr']}  {row['elapsed_s']} s")

    best = _with_progress(console, cfg.steps, describe, "val_rd_loss",
                          lambda progress: train_rd(cfg, train_volumes, val_volumes, resume=resume,
                                                    progress=progress))
    console.print(f"best checkpoint: {best}")
