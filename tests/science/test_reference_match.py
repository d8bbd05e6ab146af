"""Where does a known structure live? Given the true map of one state, made on another grid
(as a map from another dataset would come), the particles of that state rank highest.

Uses the science group's shared run (conftest.py). Measured: the AUC of each state from
its own true map (k=20 centres): 0.949 for state 0, 0.957 for state 1."""

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
    for state in (0, 1):
        score = res.per_particle(state)[good]
        own = truth.state[good] == state
        auc = roc_auc_score(own, score)
        print(f"state {state}: AUC {auc:.3f}, best cluster {res.best(state)} "
              f"(r={res.corr[state].max():.3f})")
        assert auc >= 0.9
    # the match tells the states apart: each reference prefers its own state's centres
    assert res.best(0) != res.best(1)
