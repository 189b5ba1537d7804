"""Codec speed, entropy coding included: encode/decode slices/s per device, mode, batch size and operating
point of a registered model, against references measured in the same run.

Run:  python benchmarks/codec_speed.py [--model cae-paper] [--repeats 3] [--batch-sizes 1,4,8]
          [--modes fp32,channels_last,bf16] [--qualities ends|all|1,3,6] [--max-abs-error 0,2]
          [--device auto|cpu|cuda]

``--model`` names any model ``pacs_cae.codec.load_codec`` loads (the paper's CAE today, the rate-distortion
codec once it is registered). Each row is the codec's own ``encode``/``decode`` end to end (normalisation,
network, quantisation, entropy coding, container), on synthetic 12-bit head slices. References measured in
the same run, so the ratios hold on a noisy shared machine:

* the machine's convolution and matrix-multiply throughput (GFLOP/s, float32 and bfloat16): "% of peak" is
  the codec's GFLOP/s (its convolution MACs, counted with forward hooks during the very encode and decode
  calls timed, x 2) over the best measured peak of the same precision;
* JPEG 2000 (OpenJPEG through imagecodecs, 60 dB target, one slice at a time) on the same slices:
  "x J2K" is the codec's slices/s over JPEG 2000's.

A GPU row set is added when CUDA is present (``--device auto``). Codecs with operating points (``qualities``)
are timed at their lowest and highest quality by default (``--qualities ends``). For the paper's CAE a Brotli
quality sweep on a real latent shows why quality 5 is its default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import brotli
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pacs_cae.codec import Codec, load_codec
from pacs_cae.codec.device import resolve_device
from pacs_cae.evaluation.baselines import standard_codecs
from pacs_cae.evaluation.evaluate import operating_points

CONVS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def conv_macs_during(module: torch.nn.Module | None, fn: Callable[[], object]) -> int:
    """Multiply-accumulates of every (transposed) convolution in ``module`` while ``fn`` runs, from the real
    tensor shapes (so any architecture, hyperprior included, is counted as it runs)."""
    total = 0

    def hook(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        k = int(np.prod(layer.kernel_size))
        if isinstance(layer, torch.nn.ConvTranspose2d):  # every input element scatters into k x out_ch
            total += inputs[0].numel() * layer.out_channels // layer.groups * k
        else:  # every output element gathers k x in_ch
            total += output.numel() * layer.in_channels // layer.groups * k

    handles = [m.register_forward_hook(hook) for m in (module.modules() if module else []) if isinstance(m, CONVS)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return total


def network_of(codec: object) -> torch.nn.Module | None:
    """The codec's torch module (``model`` on ``Codec``; ``network`` or ``net`` on others), if it shows one."""
    for name in ("model", "network", "net"):
        module = getattr(codec, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def timeit(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best-of-``repeats`` seconds per call, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def roofline(device: torch.device, repeats: int) -> dict[str, float]:
    """GFLOP/s of a large conv (the codec's typical layer) and of a square matmul, float32 and bfloat16."""
    out: dict[str, float] = {}
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device).to(memory_format=torch.channels_last).eval()
    x = torch.rand(4, 128, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    conv_flops = 2 * 4 * 64 * 64 * 128 * 128 * 9
    a, b = torch.rand(1024, 1024, device=device), torch.rand(1024, 1024, device=device)
    mm_flops = 2 * 1024**3
    with torch.inference_mode():
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            ctx = (lambda dtype=dtype: torch.autocast(device.type, dtype=dtype)) if dtype else None
            def run_conv(ctx: Any = ctx) -> object:
                if ctx is None:
                    return conv(x)
                with ctx():
                    return conv(x)
            out[f"conv {name}"] = conv_flops / timeit(run_conv, repeats, device) / 1e9
            aa, bb = (a, b) if dtype is None else (a.to(dtype), b.to(dtype))
            out[f"matmul {name}"] = mm_flops / timeit(lambda aa=aa, bb=bb: aa @ bb, repeats, device) / 1e9
    return out


def phantom(n: int, seed: int) -> np.ndarray:
    """A smooth, noisy 12-bit head-like slice, so the entropy coder sees realistic statistics."""
    y, x = np.mgrid[0:n, 0:n] / n
    image = np.clip(1.2 - np.hypot((y - 0.5) / 0.45, (x - 0.5) / 0.38), 0, 1)
    noise = np.random.default_rng(seed).normal(0, 0.02, (n, n))
    image = image + 0.1 * np.sin(40 * x) * np.cos(30 * y) + noise
    return np.clip(image * 3000 + 200, 0, 4095).astype(np.uint16)


def load(model: str, device: torch.device, mode: str, max_batch: int) -> object:
    """``load_codec`` in ``mode``; a codec without execution modes is loaded as it comes (mode "default")."""
    try:
        return load_codec(model, device=device, mode=mode, max_batch=max_batch)
    except TypeError:
        return load_codec(model, device=device)


def pick_qualities(codec: object, spec: str) -> list[int | None]:
    """``ends``: the lowest and highest operating point; ``all``; or the listed ones."""
    qualities = operating_points(codec)
    if qualities == [None] or spec == "all":
        return qualities
    if spec == "ends":
        return sorted({qualities[0], qualities[-1]}, key=qualities.index)
    return [int(q) for q in spec.split(",")]


def j2k_reference(slices: Sequence[np.ndarray], repeats: int) -> tuple[float, float]:
    """JPEG 2000 (60 dB target) encode and decode slices/s on ``slices``, one at a time."""
    j2k = next(c for c in standard_codecs() if c.name == "JPEG 2000 60 dB")
    streams = [j2k.encoder(s, 12) for s in slices]
    cpu = torch.device("cpu")
    t_enc = timeit(lambda: [j2k.encoder(s, 12) for s in slices], repeats, cpu) / len(slices)
    t_dec = timeit(lambda: [j2k.decoder(b, 12) for b in streams], repeats, cpu) / len(slices)
    return 1 / t_enc, 1 / t_dec


def time_codec(codec: object, part: list[np.ndarray], quality: int | str | None, repeats: int,
               device: torch.device) -> dict[str, float]:
    """Seconds per slice to encode and decode ``part`` in one call, convolution MACs per slice, bpp.

    ``quality`` "d<N>" times ``encode(..., max_abs_error=N)`` instead (the guaranteed-bound points)."""
    if isinstance(quality, str):
        extra: dict = {"max_abs_error": int(quality[1:])}
    else:
        extra = {} if quality is None else {"quality": quality}

    def encode() -> list[bytes]:
        return codec.encode(part, bits_stored=12, **extra)

    blobs = encode()

    def decode() -> object:
        return codec.decode(blobs)

    network = network_of(codec)
    n = len(part)
    return {
        "enc_macs": conv_macs_during(network, encode) / n,
        "dec_macs": conv_macs_during(network, decode) / n,
        "t_enc": timeit(encode, repeats, device) / n,
        "t_dec": timeit(decode, repeats, device) / n,
        "bpp": 8 * sum(map(len, blobs)) / (n * part[0].size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cae-paper", help="model id (or model directory) to time")
    parser.add_argument("--models-dir", default=None, help="default: $PACS_CAE_MODELS_DIR or models/")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (best is reported)")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--modes", default="fp32,channels_last,bf16", help="comma-separated Codec modes")
    parser.add_argument("--qualities", default="ends", help="ends | all | comma-separated operating points")
    parser.add_argument("--max-abs-error", default="", help="comma-separated error bounds to time as well "
                        "(codecs with supports_max_abs_error; shown as quality dN)")
    parser.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when present), cpu, cuda")
    parser.add_argument("--size", type=int, default=512, help="slice height and width")
    parser.add_argument("--brotli-qualities", default="1,5,9,11", help="CAE Brotli sweep ('' to skip)")
    args = parser.parse_args()
    if args.models_dir:
        os.environ["PACS_CAE_MODELS_DIR"] = args.models_dir
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if args.device != "auto":
        devices = [resolve_device(args.device)]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    console = Console() if sys.stdout.isatty() else Console(width=160)  # no wrapping in logs
    slices = [phantom(args.size, s) for s in range(max(batch_sizes))]
    j2k_enc, j2k_dec = j2k_reference(slices[: min(4, len(slices))], args.repeats)
    console.print(f"model {args.model}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
                  f"{os.cpu_count()} CPUs; slice {args.size}x{args.size} 12-bit; JPEG 2000 60 dB reference: "
                  f"encode {j2k_enc:.1f}, decode {j2k_dec:.1f} slices/s")

    table = Table(title=f"{args.model}: end-to-end codec speed (entropy coding and container included)")
    for col in ("device", "mode", "quality", "batch", "bpp", "encode sl/s", "decode sl/s", "enc x J2K",
                "dec x J2K", "GMAC enc/dec", "% of peak (enc/dec)"):
        table.add_column(col, justify="right")
    for device in devices:
        peaks = roofline(device, max(5, args.repeats))  # cheap, and noisy on a shared machine
        console.print(f"{device} measured peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
        for mode in args.modes.split(","):
            codec = load(args.model, device, mode, max(batch_sizes))
            shown_mode = getattr(codec, "mode", "default")
            precision = "bf16" if shown_mode == "bf16" else "fp32"
            peak = max(peaks[f"conv {precision}"], peaks[f"matmul {precision}"])
            bounds = [f"d{d}" for d in args.max_abs_error.split(",") if d] if getattr(
                codec, "supports_max_abs_error", False) else []
            for quality in [*pick_qualities(codec, args.qualities), *bounds]:
                for batch in batch_sizes:
                    r = time_codec(codec, slices[:batch], quality, args.repeats, device)
                    g_enc, g_dec = 2 * r["enc_macs"] / r["t_enc"] / 1e9, 2 * r["dec_macs"] / r["t_dec"] / 1e9
                    table.add_row(
                        str(device), shown_mode, "-" if quality is None else str(quality), str(batch),
                        f"{r['bpp']:.3f}", f"{1 / r['t_enc']:.2f}", f"{1 / r['t_dec']:.2f}",
                        f"{1 / r['t_enc'] / j2k_enc:.2f}", f"{1 / r['t_dec'] / j2k_dec:.2f}",
                        f"{r['enc_macs'] / 1e9:.2f} / {r['dec_macs'] / 1e9:.2f}",
                        f"{100 * g_enc / peak:.0f}% / {100 * g_dec / peak:.0f}%",
                    )
            if shown_mode == "default":
                break  # a codec without modes: one pass per device
    console.print(table)

    codec = load(args.model, devices[0], "auto", 1)
    if args.brotli_qualities and isinstance(codec, Codec):
        brotli_sweep(codec, args)


def brotli_sweep(codec: Codec, args: argparse.Namespace) -> None:
    """The paper CAE's latent under several Brotli qualities (its entropy coding stage)."""
    from pacs_cae.codec.container import unpack_blob

    console = Console() if sys.stdout.isatty() else Console(width=160)
    raw = brotli.decompress(unpack_blob(codec.encode([phantom(args.size, 0)], bits_stored=12)[0])[1])
    trained = codec.card.trained if codec.card else True
    sweep = Table(title=f"Brotli on one slice's latent codes ({len(raw)} bytes, model {codec.model_id}"
                  f"{'' if trained else ', UNTRAINED'})")
    for col in ("quality", "bytes", "ratio vs q11", "compress ms"):
        sweep.add_column(col, justify="right")
    qualities = [int(q) for q in args.brotli_qualities.split(",")]
    sizes = {q: len(brotli.compress(raw, quality=q)) for q in qualities}
    for q in qualities:
        ms = 1e3 * timeit(lambda q=q: brotli.compress(raw, quality=q), args.repeats, torch.device("cpu"))
        sweep.add_row(str(q), str(sizes[q]), f"{sizes[q] / sizes[max(qualities)]:.3f}", f"{ms:.1f}")
    console.print(sweep)


if __name__ == "__main__":
    main()
