"""The science group's shared run: one simulated dataset trained once per session.

Dataset (stated budget): 8000 particles, D=32 (192 A box, 6 A pixels), SNR 3, CTF with 1-3 um
defocus, 15% junk, seed 4; network 128 x 2 for encoder and decoder, zdim 8, batch 8, lr 1e-3,
the defaults otherwise, 12 epochs, seed 0: about 2 minutes on 2 CPU cores (7 s/epoch).
test_recovery scores it against the truth; test_junk_filter lassos its junk and trains again
on the rest (about 2 more minutes).
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset
from napari_cryodrgn.training.api import make_trainer

EPOCHS = 12
SIM = dict(n=8000, D=32, apix=6.0, snr=3.0, junk=0.15, seed=4)
NET = dict(batch_size=8, lr=1e-3, qdim=128, qlayers=2, pdim=128, players=2, seed=0)


@dataclass
class ScienceRun:
    root: Path
    data: dict  # write_dataset's paths
    workdir: Path
    epochs: int


@pytest.fixture(scope="session")
def science_run(tmp_path_factory) -> ScienceRun:
    root = tmp_path_factory.mktemp("science")
    data = write_dataset(root / "data", SimConfig(**SIM))
    tr = make_trainer(data["particles"], data["poses"], root / "run", 8, ctf=data["ctf"],
                      num_epochs=EPOCHS, **NET)
    for _ in tr.run():
        pass
    return ScienceRun(root, data, root / "run", EPOCHS)
