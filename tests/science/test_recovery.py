"""End to end on simulated data: training recovers the known heterogeneity.

Dataset (stated budget): 8000 particles, D=32 (192 A box, 6 A pixels), SNR 3, CTF with 1-3 um
defocus, 10% junk, seed 4; network 128 x 2 for encoder and decoder, zdim 8, batch 8, lr 1e-3,
encoder input turned to a canonical in-plane angle (the default), 12 epochs: about 2.5 minutes
on 2 CPU cores.
"""

import pytest

from napari_cryodrgn.analysis.fsc import fsc_auc
from napari_cryodrgn.analysis.groundtruth import Truth, latent_for, latent_scores
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.simulate.dataset import SimConfig, write_dataset
from napari_cryodrgn.training.api import make_trainer
from napari_cryodrgn.training.checkpoint import load_z

EPOCHS = 12


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("science")
    data = write_dataset(root / "data", SimConfig(n=8000, D=32, apix=6.0, snr=3.0, junk=0.1,
                                                  seed=4))
    tr = make_trainer(data["particles"], data["poses"], root / "run", 8, ctf=data["ctf"],
                      num_epochs=EPOCHS, batch_size=8, lr=1e-3, qdim=128, qlayers=2, pdim=128,
                      players=2, seed=0)
    for _ in tr.run():
        pass
    return root


@pytest.mark.slow
def test_latent_recovers_conformation_state_and_junk(trained):
    truth = Truth.load(trained / "data")
    z, _ = load_z(trained / "run" / f"z.{EPOCHS}.pkl")
    s = latent_scores(z, truth)
    print(f"conformation R^2 {s.r2:.3f}, state accuracy {s.state_acc:.3f}, "
          f"junk AUC {s.junk_auc:.3f}")
    assert s.r2 >= 0.7
    assert s.state_acc >= 0.85
    assert s.junk_auc >= 0.95


@pytest.mark.slow
def test_decoded_maps_match_their_own_conformation(trained):
    truth = Truth.load(trained / "data")
    z, _ = load_z(trained / "run" / f"z.{EPOCHS}.pkl")
    dec = load_run(trained / "run").volume_decoder()
    ends = {c: read_mrc(p)[0] for p, c, s in truth.maps if s == 0 and c in (0.0, 1.0)}
    assert set(ends) == {0.0, 1.0}
    for c, other in ((0.0, 1.0), (1.0, 0.0)):
        vol = dec(latent_for(z, truth, c, 0))
        own, cross = fsc_auc(vol, ends[c]), fsc_auc(vol, ends[other])
        print(f"map at conf {c}: FSC-AUC own {own:.3f}, other end {cross:.3f}")
        assert own > cross
