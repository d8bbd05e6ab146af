"""The heterogeneity VAE: image encoder -> latent z -> coordinate decoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .decoder import CoordDecoder
from .mlp import MLP


@dataclass
class ModelArgs:
    """Network hyper-parameters, stored as ``model_args`` in config.yaml (cryoDRGN's keys)."""

    zdim: int = 8
    qlayers: int = 3
    qdim: int = 1024
    players: int = 3
    pdim: int = 1024
    encode_mode: str = "resid"
    enc_mask: int = -2  # -2: D_img // 2 (resolved when the model is built); -1: no mask
    pe_type: str = "gaussian"
    feat_sigma: float = 0.5
    pe_dim: int | None = None
    domain: str = "fourier"
    activation: str = "relu"
    enc_input: str = "image"  # "image" (cryoDRGN) or "residual": image minus the map at z = 0
    enc_inplane: bool = False  # encoder sees each image turned to a canonical in-plane angle

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelArgs:
        keys = cls.__dataclass_fields__.keys()
        return cls(**{k: d[k] for k in keys if k in d})


class HetVAE(nn.Module):
    """Encoder ``encoder.main.*`` and decoder ``decoder.*`` with cryoDRGN-compatible names."""

    def __init__(self, D_lat: int, enc_in_dim: int, args: ModelArgs):
        super().__init__()
        if args.enc_input not in ("image", "residual"):
            raise ValueError(f"enc_input {args.enc_input!r} is not supported (image or residual)")
        if args.encode_mode not in ("resid", "mlp"):
            raise ValueError(f"encode_mode {args.encode_mode!r} is not supported (resid or mlp)")
        self.args = args
        self.zdim = args.zdim
        resid = args.encode_mode == "resid"
        self.encoder = MLP(enc_in_dim, args.qlayers, args.qdim, 2 * args.zdim,
                           args.activation, resid)
        self.decoder = CoordDecoder(
            D_lat, args.zdim, args.players, args.pdim, args.pe_type, args.pe_dim,
            args.feat_sigma, args.domain, args.activation, resid=True,
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(x)
        return out[:, : self.zdim], out[:, self.zdim :]

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
