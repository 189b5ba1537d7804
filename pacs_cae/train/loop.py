"""The training loop: random crops, Adam, cosine schedule, quantisation-aware latent noise, resumable.

The paper's recipe (full 512x512 slices, lr 1e-4, BCE, batch 8) is far too slow on a CPU (seconds per step and
~17.5 dB after 40 minutes here), so the defaults train the *same architecture* on random crops (the network is
fully convolutional) with a higher learning rate and MSE. Every option of the paper's recipe is still available.
Checkpoints are written atomically every ``checkpoint_minutes`` and at the end, so a run killed at any point
resumes with ``--resume`` from where it stopped.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn

from pacs_cae.codec.device import resolve_device
from pacs_cae.codec.metrics import psnr_db
from pacs_cae.codec.model import ConvAutoencoder, build_model
from pacs_cae.codec.normalize import unit_range
from pacs_cae.codec.quant import LEVELS, dequantize, quantize
from pacs_cae.train.slices import CropSampler, axial_slices, fit_to
from pacs_cae.train.sources import Volume

log = logging.getLogger(__name__)

CSV_FIELDS = ["step", "elapsed_s", "lr", "loss", "train_psnr_db", "val_psnr_db", "val_psnr_quantized_db"]


@dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint."""

    run_dir: Path = Path("runs/cae-paper")
    architecture: str = "cae-paper"
    steps: int = 4000
    batch_size: int = 16
    crop: int = 128
    target: int = 512
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 100
    loss: str = "mse"  # mse | bce (the paper's)
    latent_noise: bool = True  # uniform noise of one quantisation step on the latent while training
    device: str = "auto"
    bf16: bool = True  # autocast on CPU (AVX-512 BF16) / CUDA
    threads: int | None = None
    seed: int = 0
    val_every: int = 200
    val_slices: int = 8
    checkpoint_minutes: float = 10.0
    max_minutes: float | None = None
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def quantize_latent(z: torch.Tensor) -> torch.Tensor:
    """The product's Eq. 2 then Eq. 3 per sample (:mod:`pacs_cae.codec.quant`, what the codec stores)."""
    q = quantize(z)
    return dequantize(q.codes, q.minimum, q.maximum).to(z.dtype)


def latent_noise(z: torch.Tensor) -> torch.Tensor:
    """Additive uniform noise of one quantisation step, so the decoder learns to live with Eq. 2/3."""
    flat = z.flatten(1)
    span = (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values).detach()
    noise = (torch.rand_like(flat) - 0.5) * span / LEVELS
    return (flat + noise).view_as(z)


def validation_slices(volumes: list[Volume], count: int, target: int) -> torch.Tensor:
    """Full slices of the held-out volumes, fitted to target x target and normalised like the codec does."""
    out = []
    per = max(1, count // max(1, len(volumes)))
    for vol in volumes:
        for s in axial_slices(vol, per):
            out.append(unit_range(fit_to(s, target)))
    return torch.from_numpy(np.stack(out)[:, None])


@torch.inference_mode()
def evaluate(model: ConvAutoencoder, slices: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """Mean PSNR (dB, R = 1 on normalised slices) without and with latent quantisation, float32."""
    model.eval()
    plain, quant = [], []
    for i in range(slices.shape[0]):
        x = slices[i : i + 1].to(device)
        z = model.encoder(x)
        plain.append(psnr_db(float(((model.decoder(z) - x) ** 2).mean()), 1.0))
        quant.append(psnr_db(float(((model.decoder(quantize_latent(z)) - x) ** 2).mean()), 1.0))
    model.train()
    return float(np.mean(plain)), float(np.mean(quant))


def open_csv_log(
    path: Path, fields: list[str], resume: bool, step: int
) -> tuple[TextIO, csv.DictWriter[str]]:
    """The run's CSV log, opened for appending; on resume, rows after ``step`` are dropped (redone)."""
    new = not path.exists() or not resume
    if not new:
        with path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(kept)
    handle = path.open("w" if new else "a", newline="")
    writer = csv.DictWriter(handle, fieldnames=fields)
    if new:
        writer.writeheader()
    return handle, writer


class StopOnSignal:
    """While entered (main thread only), SIGTERM/SIGINT set an event instead of killing the run, so the loop
    ends at the next step boundary with a checkpoint (background runs get SIGTERM)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict = {}

    def __enter__(self) -> threading.Event:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, lambda *_: self.event.set())
        return self.event

    def __exit__(self, *_: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    cfg: TrainConfig,
    train_volumes: list[Volume],
    val_volumes: list[Volume],
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
) -> Path:
    """Run (or resume) training; returns the path of the best checkpoint (by quantised validation PSNR)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.architecture).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best, elapsed0 = 0, -1.0, 0.0
    last_path, best_path = cfg.run_dir / "last.pt", cfg.run_dir / "best.pt"
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best, elapsed0 = ckpt["step"], ckpt.get("best_val_psnr_db", -1.0), ckpt.get("elapsed_s", 0.0)
        log.info("resumed from %s at step %d", last_path, step)
    sampler = CropSampler(train_volumes, crop=cfg.crop, target=cfg.target, seed=cfg.seed + step)
    val = validation_slices(val_volumes, cfg.val_slices, cfg.target)
    loss_fn: nn.Module = nn.MSELoss() if cfg.loss == "mse" else nn.BCELoss()
    csv_file, writer = open_csv_log(cfg.run_dir / "log.csv", CSV_FIELDS, resume, step)
    start = time.monotonic()
    last_ckpt = start
    autocast_device = "cuda" if device.type == "cuda" else "cpu"

    def checkpoint(path: Path) -> None:
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "best_val_psnr_db": best,
                "elapsed_s": elapsed0 + time.monotonic() - start,
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                "device": str(device),
                "torch": torch.__version__,
            },
            path,
        )

    model.train()
    try:
        with StopOnSignal() as stop:
            while step < cfg.steps and not stop.is_set():
                if cfg.max_minutes and (time.monotonic() - start) / 60 >= cfg.max_minutes:
                    log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, step)
                    break
                lr = learning_rate(cfg, step)
                for group in opt.param_groups:
                    group["lr"] = lr
                x = torch.from_numpy(sampler.batch(cfg.batch_size)).to(device)
                with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=cfg.bf16):
                    z = model.encoder(x)
                    if cfg.latent_noise:
                        z = latent_noise(z)
                    y = model.decoder(z)
                loss = loss_fn(y.float(), x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                row = {
                    "step": step,
                    "elapsed_s": round(elapsed0 + time.monotonic() - start, 1),
                    "lr": f"{lr:.3g}",
                    "loss": f"{loss.item():.6f}",
                    "train_psnr_db": f"{psnr_db(float(((y.detach().float() - x) ** 2).mean()), 1.0):.2f}",
                    "val_psnr_db": "",
                    "val_psnr_quantized_db": "",
                }
                if step % cfg.val_every == 0 or step == cfg.steps:
                    v_plain, v_quant = evaluate(model, val, device)
                    row["val_psnr_db"], row["val_psnr_quantized_db"] = f"{v_plain:.2f}", f"{v_quant:.2f}"
                    if v_quant > best:
                        best = v_quant
                        checkpoint(best_path)
                writer.writerow(row)
                csv_file.flush()
                if progress:
                    progress(row)
                if (time.monotonic() - last_ckpt) / 60 >= cfg.checkpoint_minutes:
                    checkpoint(last_path)
                    last_ckpt = time.monotonic()
    finally:
        checkpoint(last_path)
        csv_file.close()
    return best_path if best_path.exists() else last_path
