"""Where does a known structure live? Given the true map of one state, made on another grid
(as a map from another dataset would come), the particles of that state rank highest.

Uses the science group's shared run (conftest.py). The reference is the state's map at the
middle conformation, and the conformation moves too: even the true maps rank the other
state's middle above this state's ends (against state 0's reference, real-space correlation
0.952 for state 1 at conformation 0.5, 0.938 for state 0 at 0.1), so a method that resolves
the conformations well cannot rank all of a state first from one map. What a correct match
must do, and what is asserted: among the particles near the reference's conformation
(within 0.25) the state's own rank highest; with the two states' maps, the difference of a
particle's two correlations tells its state; each reference's best cluster is its own.
Measured (k=20 centres, 8 of them on junk): near-conformation AUC 0.999 / 0.993, contrast
AUC 1.000 / 1.000; over all particles and one map, 0.810 / 0.902 (0.949 / 0.957 when the
latents were coarser and the clusters each spanned more of the motion)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from napari_cryodrgn.analysis.groundtruth import Truth
from napari_cryodrgn.analysis.match import load_reference, match_references
from napari_cryodrgn.io.mrc import write_mrc
from napari_cryodrgn.session import Session
from napari_cryodrgn.simulate.phantom import render_volume


@pytest.mark.slow
def test_the_true_map_of_a_state_finds_its_particles(science_run, tmp_path):
    s = Session.open(science_run.workdir, autosave=False)
    truth = Truth.load(science_run.data["particles"].parent)
    good = ~truth.is_junk
    refs = []
    for state in (0, 1):
        # the state's true map (mid conformation) on a twice finer grid, in a larger box
        fine = np.pad(render_volume(0.5, state, 2 * s.D), 8)
        write_mrc(tmp_path / f"state{state}.mrc", fine, apix=s.apix / 2)
        refs.append(load_reference(tmp_path / f"state{state}.mrc", s.D, s.apix))
    res = match_references(s, refs, k=20)
    near = good & (np.abs(truth.conf - 0.5) <= 0.25)
    for state in (0, 1):
        own = truth.state == state
        score = res.per_particle(state)
        auc_near = roc_auc_score(own[near], score[near])
        contrast = score - res.per_particle(1 - state)
        auc_contrast = roc_auc_score(own[good], contrast[good])
        print(f"state {state}: AUC near its conformation {auc_near:.3f}, of the contrast "
              f"{auc_contrast:.3f}, over all {roc_auc_score(own[good], score[good]):.3f}; "
              f"best cluster {res.best(state)} (r={res.corr[state].max():.3f})")
        assert auc_near >= 0.9
        assert auc_contrast >= 0.95
    # the match tells the states apart: each reference prefers its own state's centres
    assert res.best(0) != res.best(1)
