"""Build a model from a run's config.yaml and load its weights (the training folder's files are
found by :class:`..io.runfolder.RunFolder`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..geometry.lattice import Lattice
from ..training.checkpoint import load_weights
from ..training.config import load_config
from .vae import HetVAE, ModelArgs
from .volume import VolumeDecoder


@dataclass
class LoadedRun:
    """A trained model with the facts needed to decode maps."""

    model: HetVAE
    config: dict
    D_lat: int
    norm: tuple[float, float]
    epoch: int | None
    weights: Path

    @property
    def D_img(self) -> int:
        return self.D_lat - 1

    def volume_decoder(self, precision: str = "fp32", device=None) -> VolumeDecoder:
        return VolumeDecoder(self.model, self.D_lat, self.norm, device=device, precision=precision)


def encoder_in_dim(D_lat: int, enc_mask: int) -> int:
    """Encoder input width for a circular mask of radius ``enc_mask`` (-1: whole lattice)."""
    if enc_mask == -1:
        return D_lat * D_lat
    lat = Lattice(D_lat)
    m = lat.circular_mask(enc_mask)
    m[lat.center] = False
    return int(m.sum())


def load_run(workdir, epoch: int | None = None, device="cpu") -> LoadedRun:
    """The model of ``epoch`` (latest when None) of the training folder ``workdir``."""
    from ..io.runfolder import RunFolder

    return RunFolder.open(workdir).model(epoch, device)


def load_weights_config(weights, config, device="cpu") -> LoadedRun:
    """A model from an explicit weights file and config.yaml (cryoDRGN's ``WEIGHTS -c
    CONFIG``); ``epoch`` is N for a file named weights.N.pkl, else None."""
    config, weights = Path(config), Path(weights)
    cfg = load_config(config)
    m = re.fullmatch(r"weights\.(\d+)\.pkl", weights.name)
    return build_model(cfg, config, weights, int(m.group(1)) if m else None, device)


def build_model(cfg: dict, config: Path, weights: Path, ep: int | None, device) -> LoadedRun:
    """The model ``cfg`` (read from ``config``) describes, with the weights of ``weights``."""
    margs = ModelArgs.from_dict(cfg["model_args"])
    D_lat = int(cfg["lattice_args"]["D"])
    enc_mask = margs.enc_mask if margs.enc_mask != -2 else (D_lat - 1) // 2
    try:
        model = HetVAE(D_lat, encoder_in_dim(D_lat, enc_mask), margs)
    except (ValueError, KeyError) as e:
        raise InputError(f"{config}: unsupported model settings ({e})") from None
    ckpt = load_weights(weights, map_location=device)
    try:
        model.load_state_dict(ckpt["model_state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise InputError(
            f"{weights}: weights do not match config.yaml's model ({first}); "
            "was the config edited or copied from another run?"
        ) from None
    model.to(device).eval()
    norm = cfg["dataset_args"].get("norm", [0.0, 1.0])
    return LoadedRun(model, cfg, D_lat, (float(norm[0]), float(norm[1])), ep, weights)
