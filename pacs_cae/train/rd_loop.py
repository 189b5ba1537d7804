"""Rate-distortion training of the ``mshp`` family: loss = bpp + lambda * 4095^2 * MSE, one lambda per crop.

Every crop in a batch draws its own quality level (so its gain vector and lambda), so one run trains every
operating point. Rate is the model's own estimate (additive uniform noise); the decoder sees rounded latents
(straight-through), as the codec will. The learning-rate schedule follows the further of step progress and
time progress (``max_minutes``, counted over all resumed sessions), so a CPU run stopped by its time budget still ends with a decayed rate.
Checkpoints (``last.pt`` every ``checkpoint_minutes``, ``best.pt`` at the lowest validation RD loss) are written
atomically; ``resume=True`` continues from ``last.pt``. The CSV log has one row per step and, at validation
steps, the bpp and PSNR of every quality level on held-out full slices (hard rounding, estimated bits).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pacs_cae.codec.device import resolve_device
from pacs_cae.codec.engine import place_in_mode
from pacs_cae.codec.metrics import psnr_db
from pacs_cae.codec.rd.network import MeanScaleHyperprior, RDConfig
from pacs_cae.codec.rd.priors import gaussian_likelihood
from pacs_cae.train.loop import StopOnSignal, open_csv_log, save_atomic
from pacs_cae.train.rd_data import RealisticCropSampler, realistic_val_slices
from pacs_cae.train.sources import Volume

log = logging.getLogger(__name__)

#: Distortion is measured in 12-bit units: lambda * PEAK^2 * MSE on [0, 1] slices.
PEAK = 4095.0


@dataclass
class RDTrainConfig:
    """Everything that defines an RD run; saved in every checkpoint."""

    run_dir: Path = Path("runs/mshp")
    architecture: str = "mshp"
    channels: int = 64
    latent_channels: int = 96
    steps: int = 20000
    batch_size: int = 8
    crop: int = 128
    target: int = 512
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_steps: int = 200
    clip_grad: float = 1.0
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    val_every: int = 250
    val_slices: int = 4
    checkpoint_minutes: float = 5.0
    max_minutes: float | None = None
    train_names: list[str] = field(default_factory=list)
    val_names: list[str] = field(default_factory=list)

    def model_config(self) -> RDConfig:
        return RDConfig(channels=self.channels, latent_channels=self.latent_channels)


def schedule(cfg: RDTrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up, then cosine decay over the further of step and time progress."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.max_minutes:
        t = max(t, elapsed_s / (60 * cfg.max_minutes))
    t = min(1.0, t)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def rd_loss(model: MeanScaleHyperprior, x: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean over crops of bpp + lambda * PEAK^2 * MSE, and per-batch statistics for the log."""
    out = model(x, levels)
    pixels = x.shape[-1] * x.shape[-2]
    bpp = (out["y_bits"] + out["z_bits"]) / pixels
    mse = ((out["x_hat"].float() - x) ** 2).mean(dim=(1, 2, 3))
    lambdas = torch.tensor(model.config.lambdas, device=x.device)[levels]
    loss = (bpp + lambdas * PEAK**2 * mse).mean()
    return loss, {"bpp": float(bpp.detach().mean()), "psnr": psnr_db(float(mse.detach().mean()), 1.0)}


@torch.inference_mode()
def validate(model: MeanScaleHyperprior, slices: torch.Tensor) -> dict[int, tuple[float, float]]:
    """Per quality level: (estimated bpp, PSNR dB) on full slices with hard rounding, float32."""
    model.eval()
    result = {}
    for q in range(model.config.qualities):
        bits, mses = [], []
        for i in range(slices.shape[0]):
            x = slices[i : i + 1]
            level = torch.tensor([q])
            y = model.analysis(x, level)
            z_hat = torch.round(model.h_a(y))
            means, scales = model.entropy_parameters(z_hat)
            sym = torch.round(y - means)
            b = -torch.log2(gaussian_likelihood(sym, scales)).sum() - torch.log2(model.z_prior(z_hat)).sum()
            x_hat = model.synthesis(sym + means, level).clamp(0, 1)
            bits.append(float(b) / x.numel())
            mses.append(float(((x_hat - x) ** 2).mean()))
        result[q] = (float(np.mean(bits)), float(np.mean([psnr_db(m, 1.0) for m in mses])))
    model.train()
    return result


def csv_fields(qualities: int) -> list[str]:
    per_q = [f"val_q{q + 1}_{k}" for q in range(qualities) for k in ("bpp", "psnr_db")]
    return ["step", "elapsed_s", "lr", "loss", "train_bpp", "train_psnr_db", "val_rd_loss", *per_q]


def train_rd(
    cfg: RDTrainConfig,
    train_volumes: list[Volume],
    val_volumes: list[Volume],
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
) -> Path:
    """Run (or resume) RD training; returns the path of the best checkpoint (lowest validation RD loss)."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    # channels_last: oneDNN's fastest fp32 layout here (~2x NCHW for this network's backward pass)
    model = place_in_mode(MeanScaleHyperprior(cfg.model_config()), device, "channels_last").train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best, elapsed0 = 0, math.inf, 0.0
    last_path, best_path = cfg.run_dir / "last.pt", cfg.run_dir / "best.pt"
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best, elapsed0 = ckpt["step"], ckpt.get("best_val_rd_loss", math.inf), ckpt.get("elapsed_s", 0.0)
        log.info("resumed from %s at step %d", last_path, step)
    sampler = RealisticCropSampler(train_volumes, crop=cfg.crop, target=cfg.target, seed=cfg.seed + step)
    val = torch.from_numpy(realistic_val_slices(val_volumes, cfg.val_slices, cfg.target)).to(device)
    levels_rng = np.random.default_rng(cfg.seed + 7919 * step)
    qualities = model.config.qualities
    csv_file, writer = open_csv_log(cfg.run_dir / "log.csv", csv_fields(qualities), resume, step)
    start = time.monotonic()
    last_ckpt = start

    def elapsed() -> float:
        return elapsed0 + time.monotonic() - start

    def checkpoint(path: Path) -> None:
        save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "best_val_rd_loss": best,
                "elapsed_s": elapsed(),
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                "model_config": asdict(model.config),
                "device": str(device),
                "torch": torch.__version__,
            },
            path,
        )

    model.train()
    try:
        with StopOnSignal() as stop:
            while step < cfg.steps and not stop.is_set():
                if cfg.max_minutes and elapsed() / 60 >= cfg.max_minutes:
                    log.info("time budget of %.1f min (all sessions) reached at step %d", cfg.max_minutes, step)
                    break
                lr = schedule(cfg, step, elapsed())
                for group in opt.param_groups:
                    group["lr"] = lr
                x = torch.from_numpy(sampler.batch(cfg.batch_size)).to(device, memory_format=torch.channels_last)
                levels = torch.from_numpy(levels_rng.integers(0, qualities, cfg.batch_size)).to(device)
                loss, stats = rd_loss(model, x, levels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                opt.step()
                step += 1
                row: dict = {k: "" for k in csv_fields(qualities)}
                row.update(step=step, elapsed_s=round(elapsed(), 1), lr=f"{lr:.3g}", loss=f"{loss.item():.5f}",
                           train_bpp=f"{stats['bpp']:.4f}", train_psnr_db=f"{stats['psnr']:.2f}")
                if step % cfg.val_every == 0 or step == cfg.steps:
                    scores = validate(model, val)
                    rd = float(np.mean([bpp + lam * PEAK**2 * 10 ** (-db / 10)
                                        for lam, (bpp, db) in zip(model.config.lambdas, scores.values())]))
                    row["val_rd_loss"] = f"{rd:.5f}"
                    for q, (bpp, db) in scores.items():
                        row[f"val_q{q + 1}_bpp"], row[f"val_q{q + 1}_psnr_db"] = f"{bpp:.4f}", f"{db:.2f}"
                    if rd < best:
                        best = rd
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
