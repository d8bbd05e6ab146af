"""End to end on simulated data: training recovers the known heterogeneity.

The run is the science group's shared one (conftest.py): 8000 particles, D=32 (192 A box,
6 A pixels), SNR 3, CTF with 1-3 um defocus, 15% junk, seed 4; network 128 x 2 for encoder and
decoder, zdim 8, batch 8, lr 1e-3, the defaults otherwise (encoder input turned in-plane, junk
weighed down, weight average), 12 epochs: about 2 minutes on 2 CPU cores. Measured with 15%
junk: conformation R^2 0.930, state accuracy 0.999, junk AUC 0.995; maps at the two ends
FSC-AUC 0.416 / 0.415 to their own conformation against 0.341 / 0.343 to the other end, and
dFSC-AUC 0.352 over the 20 truth-grid maps (one consensus map scores 0, cryoDRGN 4.3.1 0.08).
"""

import pytest

from napari_cryodrgn.analysis.fsc import dfsc_auc, fsc_auc
from napari_cryodrgn.analysis.groundtruth import Truth, latent_for, latent_scores
from napari_cryodrgn.io.mrc import read_mrc
from napari_cryodrgn.model.load import load_run
from napari_cryodrgn.training.checkpoint import load_z

EPOCHS = 12  # the shared run's (conftest.py)


@pytest.fixture(scope="module")
def trained(science_run):
    """The shared run's root: data/ (the dataset) and run/ (the training folder)."""
    assert science_run.epochs == EPOCHS
    return science_run.root


@pytest.mark.slow
def test_latent_recovers_conformation_state_and_junk(trained):
    truth = Truth.load(trained / "data")
    z, _ = load_z(trained / "run" / f"z.{EPOCHS}.pkl")
    s = latent_scores(z, truth)
    print(f"conformation R^2 {s.r2:.3f}, state accuracy {s.state_acc:.3f}, "
          f"junk AUC {s.junk_auc:.3f}")
    assert s.r2 >= 0.85
    assert s.state_acc >= 0.95
    assert s.junk_auc >= 0.95


@pytest.mark.slow
def test_refinement_through_the_decoder_sharpens_the_latent(trained):
    """z.N.pkl holds the latents refined after the last epoch; the encoder's are in
    z.N.encoder.pkl. Following the decoder at each particle's pose reads more of the
    conformation than the encoder does (CI set, 1500 particles: R^2 0.940 -> 0.971)."""
    truth = Truth.load(trained / "data")
    enc = latent_scores(load_z(trained / "run" / f"z.{EPOCHS}.encoder.pkl")[0], truth)
    ref = latent_scores(load_z(trained / "run" / f"z.{EPOCHS}.pkl")[0], truth)
    print(f"encoder: R^2 {enc.r2:.3f}, state {enc.state_acc:.3f}, junk AUC {enc.junk_auc:.3f}; "
          f"refined: R^2 {ref.r2:.3f}, state {ref.state_acc:.3f}, junk AUC {ref.junk_auc:.3f}")
    assert ref.r2 >= enc.r2 + 0.015
    assert ref.r2 >= 0.95
    assert ref.state_acc >= enc.state_acc - 0.002
    assert ref.junk_auc >= 0.95


@pytest.mark.slow
def test_decoded_maps_match_their_own_conformation(trained):
    """Signed FSC: each end's map matches its own true map by a margin over the other end's,
    and the moving part (dFSC over the whole truth grid, where one consensus map scores 0)
    is recovered."""
    truth = Truth.load(trained / "data")
    z, _ = load_z(trained / "run" / f"z.{EPOCHS}.pkl")
    dec = load_run(trained / "run").volume_decoder()
    ends = {c: read_mrc(p)[0] for p, c, s in truth.maps if s == 0 and c in (0.0, 1.0)}
    assert set(ends) == {0.0, 1.0}
    for c, other in ((0.0, 1.0), (1.0, 0.0)):
        vol = dec(latent_for(z, truth, c, 0))
        own, cross = fsc_auc(vol, ends[c]), fsc_auc(vol, ends[other])
        print(f"map at conf {c}: FSC-AUC own {own:.3f}, other end {cross:.3f}")
        assert own - cross >= 0.02
    decoded = [dec(latent_for(z, truth, c, s)) for _, c, s in truth.maps]
    true = [read_mrc(p)[0] for p, _, _ in truth.maps]
    moving = dfsc_auc(decoded, true)
    print(f"dFSC-AUC over {len(true)} maps: {moving:.3f}")
    assert moving >= 0.2
