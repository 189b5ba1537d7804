"""Codec speed: encode/decode slices/s per device, mode and batch size, against the machine's own roofline.

Run:  python benchmarks/codec_speed.py [--repeats 3] [--batch-sizes 1,4,8] [--modes fp32,channels_last,bf16]

The same run measures this machine's convolution and matrix-multiply throughput (GFLOP/s, float32 and
bfloat16), so the table shows what fraction of the attainable compute the codec reaches. The network's MACs
are counted from its layers with forward hooks (not hard-coded): ~4.9 GMAC encoder, ~4.3 GMAC decoder per
512x512 slice. A Brotli quality sweep on real latent codes shows why quality 5 is the default.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Callable

import brotli
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pacs_cae.codec import Codec, available_models, load_model
from pacs_cae.codec.device import resolve_device
from pacs_cae.codec.weights import initial_model


def count_macs(module: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass, from each (transposed) convolution's real shapes."""
    meta = copy.deepcopy(module).to("meta")
    total = 0

    def hook(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        k = layer.kernel_size[0] * layer.kernel_size[1]
        if isinstance(layer, torch.nn.ConvTranspose2d):  # every input element scatters into k x out_ch
            total += inputs[0].numel() * layer.out_channels // layer.groups * k
        else:  # every output element gathers k x in_ch
            total += output.numel() * layer.in_channels // layer.groups * k

    for layer in meta.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            layer.register_forward_hook(hook)
    with torch.inference_mode():
        meta(torch.empty(shape, device="meta"))
    return total


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
            ctx = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else None
            def run_conv() -> object:
                if ctx is None:
                    return conv(x)
                with ctx():
                    return conv(x)
            out[f"conv {name}"] = conv_flops / timeit(run_conv, repeats, device) / 1e9
            aa, bb = (a, b) if dtype is None else (a.to(dtype), b.to(dtype))
            out[f"matmul {name}"] = mm_flops / timeit(lambda: aa @ bb, repeats, device) / 1e9
    return out


def phantom(n: int, seed: int) -> np.ndarray:
    """A smooth, noisy 12-bit head-like slice, so Brotli sees realistic latent statistics."""
    y, x = np.mgrid[0:n, 0:n] / n
    image = np.clip(1.2 - np.hypot((y - 0.5) / 0.45, (x - 0.5) / 0.38), 0, 1)
    noise = np.random.default_rng(seed).normal(0, 0.02, (n, n))
    image = image + 0.1 * np.sin(40 * x) * np.cos(30 * y) + noise
    return np.clip(image * 3000 + 200, 0, 4095).astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per cell (best is reported)")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated batch sizes")
    parser.add_argument("--modes", default="fp32,channels_last,bf16", help="comma-separated Codec modes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--size", type=int, default=512, help="slice height and width")
    parser.add_argument("--brotli-qualities", default="1,5,9,11", help="Brotli sweep ('' to skip)")
    parser.add_argument("--model", default=None, help="Brotli sweep model id (default: cae-paper if present)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    console = Console() if sys.stdout.isatty() else Console(width=140)  # no wrapping in logs

    network = initial_model(0)
    enc_macs = count_macs(network.encoder, (1, 1, args.size, args.size))
    dec_macs = count_macs(network.decoder, (1, 512, args.size // 32, args.size // 32))
    peaks = roofline(device, max(5, args.repeats))  # cheap, and noisy on a shared machine
    console.print(
        f"device {device} ({torch.get_num_threads()} threads, {os.cpu_count()} CPUs), "
        f"torch {torch.__version__}, "
        f"slice {args.size}x{args.size}: encoder {enc_macs / 1e9:.2f} GMAC, decoder {dec_macs / 1e9:.2f} GMAC"
    )
    console.print("measured peaks (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))

    table = Table(title="codec speed (end to end: normalise, network, quantize, Brotli q5, container)")
    for col in ("device", "mode", "batch", "encode sl/s", "decode sl/s", "enc GFLOP/s", "dec GFLOP/s",
                "% of peak (enc/dec)"):
        table.add_column(col, justify="right")
    for mode in args.modes.split(","):
        codec = Codec(initial_model(0), model_id="bench", weights_sha256="0" * 64, device=device, mode=mode,
                      max_batch=max(batch_sizes))
        peak = max(peaks[f"conv {'bf16' if mode == 'bf16' else 'fp32'}"],
                   peaks[f"matmul {'bf16' if mode == 'bf16' else 'fp32'}"])
        for batch in batch_sizes:
            slices = [phantom(args.size, s) for s in range(batch)]
            blobs = codec.encode(slices, bits_stored=12)
            t_enc = timeit(lambda: codec.encode(slices, bits_stored=12), args.repeats, device) / batch
            t_dec = timeit(lambda: codec.decode(blobs), args.repeats, device) / batch
            g_enc, g_dec = 2 * enc_macs / t_enc / 1e9, 2 * dec_macs / t_dec / 1e9
            table.add_row(str(device), mode, str(batch), f"{1 / t_enc:.2f}", f"{1 / t_dec:.2f}",
                          f"{g_enc:.0f}", f"{g_dec:.0f}",
                          f"{100 * g_enc / peak:.0f}% / {100 * g_dec / peak:.0f}%")
    console.print(table)

    if args.brotli_qualities:
        model_id = args.model or ("cae-paper" if "cae-paper" in available_models() else "cae-paper-init")
        net, card = load_model(model_id)
        codec = Codec(net, model_id=card.model_id, weights_sha256=card.sha256, device=device)
        from pacs_cae.codec.container import unpack_blob

        raw = brotli.decompress(unpack_blob(codec.encode([phantom(args.size, 0)], bits_stored=12)[0])[1])
        sweep = Table(title=f"Brotli on one slice's latent codes ({len(raw)} bytes, model {model_id}"
                      f"{'' if card.trained else ', UNTRAINED'})")
        for col in ("quality", "bytes", "ratio vs q11", "compress ms"):
            sweep.add_column(col, justify="right")
        qualities = [int(q) for q in args.brotli_qualities.split(",")]
        sizes = {q: len(brotli.compress(raw, quality=q)) for q in qualities}
        for q in qualities:
            ms = 1e3 * timeit(lambda: brotli.compress(raw, quality=q), args.repeats, torch.device("cpu"))
            sweep.add_row(str(q), str(sizes[q]), f"{sizes[q] / sizes[max(qualities)]:.3f}", f"{ms:.1f}")
        console.print(sweep)


if __name__ == "__main__":
    main()
