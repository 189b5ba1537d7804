"""Train the residual scale network (``codec.rd.scale_net``) and ship it as a new model beside ``mshp-v1``.

Data: realistic 12-bit full slices of the training volumes only (``rd_data.rd_train_volumes``: mricron-data,
nilearn MNI152 T1 and T2-like; Rician noise, bias field, contrast, native grid and resampled), never the
held-out validation contrast and never clinical MR. For each slice and bound delta in 0, 1, 2, 4, 8 the residual
of the bounded coder without the learned layer (``context``: x_hat = the slice's minimum, the per-slice least-squares
predictor) gives pixels (network inputs, prediction error); the network learns the spread of the error from
the inputs by minimising the bits of a discretized Gaussian whose scale its output class stands for.

    python -m pacs_cae.train.rd_residual --run-dir /work/runs/bound/scale_net --slices 48 --steps 4000
    python -m pacs_cae.train.rd_residual --run-dir /work/runs/bound/scale_net --export mshp-v2

Single thread, checkpoints in ``--run-dir``; ``--export`` writes ``models/<id>/`` = the ``mshp-v1`` tensors plus
the integer network (a new weights hash, so ``mshp-v1`` blobs keep decoding with ``mshp-v1``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pacs_cae.codec.rd import context, residual, scale_net
from pacs_cae.codec.rd.priors import SCALE_MIN
from pacs_cae.codec.rd.tables import SCALE_COUNT, SCALE_MAX

DELTAS = (0, 1, 2, 4, 8)
#: log of the scale ratio between two neighbouring classes (class k ~ table 2k of the log-spaced scales).
CLASS_LOG_STEP = 2 * math.log(SCALE_MAX / SCALE_MIN) / (SCALE_COUNT - 1)


def slice_pixels(original: np.ndarray, delta: int, per_slice: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(integer network inputs (n, INPUTS), prediction errors in symbols (n,)) of one slice at ``delta``."""
    vmin, vmax = int(original.min()), int(original.max())
    x_hat = np.full(original.shape, vmin, np.int64)  # as the codec without the learned layer
    step = 2 * delta + 1
    q = residual.quantize(original.astype(np.int64) - x_hat, delta)
    pixels, at, _, offsets = context._fronts(*original.shape)
    res, xh = context._buffers(x_hat)
    qd = q.ravel()[pixels]
    res[at] = qd * step
    features, flat = context._features(res, xh, at, offsets, delta)
    weights = np.stack([context._fit_weights(features[:, flat == f], res[at][flat == f]) for f in range(2)])
    v = qd - context._mean(features, weights, flat, step)
    intensity = context.intensity_classes(x_hat, vmin, vmax).ravel()[pixels]
    x = scale_net.inputs(features[: context.NEIGHBOURS], features[context.NEIGHBOURS :], flat, intensity, step)
    keep = rng.choice(v.size, size=min(per_slice, v.size), replace=False)
    return x[keep], v[keep]


def make_data(count: int, per_slice: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from pacs_cae.train.rd_data import RealisticCropSampler, rd_train_volumes

    sampler = RealisticCropSampler(rd_train_volumes(), seed=seed)
    rng = np.random.default_rng(seed)
    xs, vs = [], []
    for _ in range(count):
        original = np.rint(sampler.full_slice() * 4095).astype(np.uint16)
        for delta in DELTAS:
            x, v = slice_pixels(original, delta, per_slice, rng)
            xs.append(x)
            vs.append(v)
    return np.concatenate(xs), np.concatenate(vs)


class FloatScaleNet(nn.Module):
    """The float twin trained here; its output is the (continuous) scale class."""

    def __init__(self) -> None:
        super().__init__()
        h = scale_net.HIDDEN
        self.layers = nn.ModuleList([nn.Linear(scale_net.INPUTS, h), nn.Linear(h, h), nn.Linear(h, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = self.layers
        return c(torch.relu(b(torch.relu(a(x)))))[:, 0]


def _layers(net: FloatScaleNet) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy())
            for layer in net.layers if isinstance(layer, nn.Linear)]


def bits(classes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bits of integer errors ``v`` under a discretized Gaussian of the classes' scales."""
    sigma = SCALE_MIN * torch.exp(classes.clamp(0, scale_net.CLASSES - 1) * CLASS_LOG_STEP)
    a = v.abs()
    mass = torch.special.ndtr((a + 0.5) / sigma) - torch.special.ndtr((a - 0.5) / sigma)
    return -torch.log2(mass.clamp_min(1e-9))


def train(run_dir: Path, slices: int, steps: int, per_slice: int, seed: int) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    x, v = make_data(slices, per_slice, seed)
    xv, vv = make_data(max(2, slices // 8), per_slice, seed + 1000)  # more training-volume slices, unseen
    net = FloatScaleNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt, vt = torch.from_numpy(x).double().float(), torch.from_numpy(v).float()
    xvt, vvt = torch.from_numpy(xv).float(), torch.from_numpy(vv).float()
    log = []
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(0, xt.shape[0], (4096,), generator=gen)
        loss = bits(net(xt[idx]), vt[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            with torch.no_grad():
                val = float(bits(net(xvt), vvt).mean())
            log.append({"step": step, "train_bits": float(loss.detach()), "val_bits": val})
            print(json.dumps(log[-1]), flush=True)
            torch.save({"state": net.state_dict(), "log": log}, run_dir / "checkpoint.pt")
    integer = scale_net.IntegerScaleNet.from_float(
        _layers(net))
    int_bits = float(bits(torch.from_numpy(integer(xv)).float(), vvt).mean())
    summary = {"pixels": int(x.shape[0]), "val_pixels": int(xv.shape[0]), "slices": slices, "steps": steps,
               "per_slice": per_slice, "deltas": list(DELTAS), "seed": seed, "hours": (time.time() - started) / 3600,
               "val_bits_float": log[-1]["val_bits"], "val_bits_integer": int_bits, "log": log}
    torch.save({"state": net.state_dict(), "log": log, "summary": summary}, run_dir / "checkpoint.pt")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def export(run_dir: Path, model_id: str, models_dir: Path, base: str = "mshp-v1") -> Path:
    """``models/<model_id>/``: the base model's tensors plus the integer scale network, and its card."""
    from safetensors.torch import load_file, save_file

    from pacs_cae.codec.weights import sha256_file

    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    net = FloatScaleNet()
    net.load_state_dict(ckpt["state"])
    integer = scale_net.IntegerScaleNet.from_float(
        _layers(net))
    src, out = models_dir / base, models_dir / model_id
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    tensors.update(integer.tensors())
    save_file(tensors, str(out / "model.safetensors"))
    card = json.loads((src / "card.json").read_text())
    if (out / "card.json").exists():  # a re-export keeps what was measured on the exported model
        previous = json.loads((out / "card.json").read_text())
        card.update({k: previous[k] for k in ("bound_gain_levels", "bound_gain_levels_measurement") if k in previous})
    summary = ckpt["summary"]
    card.update({
        "model_id": model_id,
        "sha256": sha256_file(out / "model.safetensors"),
        "description": f"{base}'s transforms and tables plus a learned integer scale network for the bounded "
                       "residual (residual model 3, codec.rd.scale_net); operating points as " + base,
        "residual_scale_net": {
            "trained_by": f"python -m pacs_cae.train.rd_residual --run-dir {run_dir} --slices {summary['slices']} "
                          f"--steps {summary['steps']} --per-slice {summary['per_slice']} --seed {summary['seed']}",
            "exported_by": f"python -m pacs_cae.train.rd_residual --run-dir {run_dir} --export {model_id}",
            "data": "realistic 12-bit full slices of the training volumes (rd_data.rd_train_volumes), each at "
                    f"max_abs_error {summary['deltas']}; {summary['pixels']} pixels; never the validation "
                    "contrast or clinical MR",
            "steps": summary["steps"], "device": "cpu (1 thread)", "hours": round(summary["hours"], 3),
            "val_bits_per_pixel_float": round(summary["val_bits_float"], 4),
            "val_bits_per_pixel_integer": round(summary["val_bits_integer"], 4),
            "val_data": "other slices of the training volumes (seed + 1000), for the learning curve only",
        },
    })
    for key in ("rd_measurement", "evaluation", "bound_evaluation"):
        card.pop(key, None)
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    for name in ("learning_curve.png",):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--per-slice", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export", metavar="MODEL_ID")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    if args.export:
        print(export(args.run_dir, args.export, args.models_dir))
    else:
        print(json.dumps({k: v for k, v in train(args.run_dir, args.slices, args.steps, args.per_slice,
                                                 args.seed).items() if k != "log"}))


if __name__ == "__main__":
    main()
