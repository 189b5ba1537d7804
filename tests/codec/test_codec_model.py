"""The network matches the paper's Tables 1 and 2 layer by layer (checked with forward hooks)."""

from __future__ import annotations

import torch
from torch import nn

from pacs_cae.codec.model import build_model

# (layer type, output H x W x C) rows of Table 1 (encoder) and Table 2 (decoder), in order.
TABLE_1 = [
    (nn.Conv2d, (512, 512, 32)), (nn.MaxPool2d, (256, 256, 32)),
    (nn.Conv2d, (256, 256, 64)), (nn.MaxPool2d, (128, 128, 64)),
    (nn.Conv2d, (128, 128, 128)), (nn.MaxPool2d, (64, 64, 128)),
    (nn.Conv2d, (64, 64, 256)), (nn.MaxPool2d, (32, 32, 256)),
    (nn.Conv2d, (32, 32, 512)), (nn.MaxPool2d, (16, 16, 512)),
]
TABLE_2 = [
    (nn.ConvTranspose2d, (32, 32, 512)), (nn.ConvTranspose2d, (64, 64, 256)),
    (nn.ConvTranspose2d, (128, 128, 128)), (nn.ConvTranspose2d, (256, 256, 64)),
    (nn.ConvTranspose2d, (512, 512, 1)),
]


def _record(module: nn.Module, kinds: tuple[type, ...]) -> tuple[list, list]:
    seen: list[tuple[type, tuple[int, int, int]]] = []
    handles = []
    for layer in module.modules():
        if isinstance(layer, kinds):
            def hook(mod, _inp, out, kind=type(layer)):  # noqa: B008 - binds this layer's type
                seen.append((kind, (out.shape[2], out.shape[3], out.shape[1])))
            handles.append(layer.register_forward_hook(hook))
    return seen, handles


def test_layer_shapes_match_tables_1_and_2() -> None:
    model = build_model("cae-paper").eval()
    enc_seen, h1 = _record(model.encoder, (nn.Conv2d, nn.MaxPool2d))
    dec_seen, h2 = _record(model.decoder, (nn.ConvTranspose2d,))
    with torch.inference_mode():
        out = model(torch.rand(1, 1, 512, 512))
    for h in h1 + h2:
        h.remove()
    assert enc_seen == TABLE_1
    assert dec_seen == TABLE_2
    assert out.shape == (1, 1, 512, 512)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0  # final sigmoid


def test_activations_and_kernels_follow_the_paper() -> None:
    model = build_model("cae-paper")
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert all(m.stride == (2, 2) for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d))
    acts = [type(m) for m in model.modules() if isinstance(m, (nn.SiLU, nn.Sigmoid))]
    assert acts == [nn.SiLU] * 9 + [nn.Sigmoid]


def test_parameter_count(capsys) -> None:
    model = build_model("cae-paper")
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    with capsys.disabled():
        print(f"\ncae-paper parameters: encoder {enc:,}, decoder {dec:,}, total {enc + dec:,}")
    # 3x3 kernels + biases, filters as in Tables 1 and 2.
    expected_enc = sum(9 * i * o + o for i, o in [(1, 32), (32, 64), (64, 128), (128, 256), (256, 512)])
    expected_dec = sum(9 * i * o + o for i, o in [(512, 512), (512, 256), (256, 128), (128, 64), (64, 1)])
    assert (enc, dec) == (expected_enc, expected_dec)


def test_fully_convolutional_for_multiples_of_32() -> None:
    model = build_model("cae-paper").eval()
    with torch.inference_mode():
        z = model.encoder(torch.rand(2, 1, 64, 96))
        assert z.shape == (2, 512, 2, 3)
        assert model.decoder(z).shape == (2, 1, 64, 96)
