"""The convolutional autoencoder of the paper (Tables 1 and 2), registered by model id.

The network is kept exactly as published so that the archive's figures can be compared with the paper's:
five Conv2d 3x3 'same' + swish + MaxPool 2x2 stages (32..512 filters) down to a 16x16x512 latent for a
512x512 slice, and five ConvTranspose2d 3x3 stride-2 stages back up, the last with one filter and a sigmoid.
It is fully convolutional, so any height and width that are multiples of 32 work.
"""

from __future__ import annotations

import torch
from torch import nn

#: Spatial reduction of the encoder (five 2x poolings): inputs must be a multiple of this.
DOWNSCALE = 32

ENCODER_FILTERS = (32, 64, 128, 256, 512)
DECODER_FILTERS = (512, 256, 128, 64, 1)


class CaeEncoder(nn.Module):
    """Table 1: (N, 1, H, W) in [0, 1] -> (N, 512, H/32, W/32)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for filters in ENCODER_FILTERS:
            layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2)]
            channels = filters
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CaeDecoder(nn.Module):
    """Table 2: (N, 512, h, w) -> (N, 1, 32h, 32w) in [0, 1].

    ``padding=1, output_padding=1`` is the PyTorch spelling of Keras' stride-2 'same' transposed
    convolution: the output is exactly twice the input.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = ENCODER_FILTERS[-1]
        for i, filters in enumerate(DECODER_FILTERS):
            last = i == len(DECODER_FILTERS) - 1
            layers += [
                nn.ConvTranspose2d(channels, filters, 3, stride=2, padding=1, output_padding=1),
                nn.Sigmoid() if last else nn.SiLU(),
            ]
            channels = filters
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class ConvAutoencoder(nn.Module):
    """Encoder + decoder; ``forward`` is the unquantized reconstruction used for training."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = CaeEncoder()
        self.decoder = CaeDecoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


#: The name a model card gives this architecture (its codec family: ``engine.cae_codec_from_tensors``).
ARCHITECTURE = "cae-paper"


def build_model(architecture: str = ARCHITECTURE) -> ConvAutoencoder:
    """The paper's CAE, randomly initialised (other families build their own networks: ``codec.families``)."""
    if architecture != ARCHITECTURE:
        raise KeyError(f"unknown architecture {architecture!r} for the paper's CAE; known: [{ARCHITECTURE!r}]")
    return ConvAutoencoder()
