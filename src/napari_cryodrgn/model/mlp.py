"""Multilayer perceptrons whose parameter names match cryoDRGN checkpoints (``main.<i>...``)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}


class ResidLinear(nn.Module):
    """``x + Linear(x)``; the wrapped layer is named ``linear`` as in cryoDRGN checkpoints."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.linear(x) + x


def _layer(n_in: int, n_out: int, resid: bool) -> nn.Module:
    return ResidLinear(n_in, n_out) if resid and n_in == n_out else nn.Linear(n_in, n_out)


class MLP(nn.Module):
    """Input layer, ``nlayers`` hidden layers (residual when ``resid``), output layer.

    Layers sit in ``self.main`` (an ``nn.Sequential`` with activations interleaved), so state
    dicts are interchangeable with cryoDRGN's ``ResidLinearMLP`` / ``MLP``.
    """

    def __init__(self, in_dim, nlayers, hidden_dim, out_dim, activation="relu", resid=True):
        super().__init__()
        act = ACTIVATIONS[activation] if isinstance(activation, str) else activation
        layers: list[nn.Module] = [_layer(in_dim, hidden_dim, resid), act()]
        for _ in range(nlayers):
            layers += [_layer(hidden_dim, hidden_dim, resid), act()]
        layers.append(_layer(hidden_dim, out_dim, resid))
        self.main = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

    def forward_split(self, feats: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """``forward(cat([feats, extra]))`` without materialising the concatenation.

        feats: (B, N, F) per point; extra: (B, E) per batch item (the latent z). The first layer
        is applied as ``W_f feats + (W_e extra + b)``, which saves the z columns for every point.
        """
        return self.split(feats)(extra)

    def split(self, feats: torch.Tensor):
        """``lambda extra: forward_split(feats, extra)`` with ``W_f feats`` computed now, once:
        the per-point part of the first layer, for many ``extra`` at the same points (a
        latent refined through the decoder). ``extra`` is (B, E), or (B, N, E) one per point
        (a per-point copy of z gives each point's own derivatives). A residual first layer
        needs the concatenation."""
        first = self.main[0]
        if isinstance(first, ResidLinear):
            def full(extra):
                rep = extra[:, None].expand(-1, feats.shape[1], -1) if extra.dim() == 2 else extra
                return self.forward(torch.cat([feats, rep], -1))

            return full
        F = feats.shape[-1]
        w = first.weight
        base = torch.nn.functional.linear(feats, w[:, :F])
        rest = list(self.main)[1:]

        def run(extra):
            v = torch.nn.functional.linear(extra, w[:, F:], first.bias)
            h = base + (v[:, None, :] if v.dim() == 2 else v)
            for layer in rest:
                h = layer(h)
            return h

        return run
