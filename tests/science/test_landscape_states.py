"""The conformational landscape separates the true states.

On the science group's shared run (conftest.py), the landscape of the non-junk particles (as
after junk filtering; 200 maps, cryoDRGN's defaults otherwise: mask from the mean map at half
its maximum dilated 5 A, 20 volume PCs, 10 clusters, average linkage). Measured: every cluster
is 95% one state (purity 0.95); the clusters joined by their majority state give an adjusted
Rand index of 0.82 against the true states (0.39 for the 10 clusters as they are: they also
split the conformational motion, which is the larger change). Volume PC1 follows the
conformation (|r| 0.97) and PC2 the state (AUC 0.96).
"""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from napari_cryodrgn.analysis.groundtruth import Truth
from napari_cryodrgn.analysis.landscape import NPZ, Landscape, run_landscape


@pytest.mark.slow
def test_landscape_clusters_separate_the_true_states(science_run, tmp_path):
    truth = Truth.load(science_run.data["particles"].parent)
    good = ~truth.is_junk
    out = tmp_path / "land"
    for _ in run_landscape(science_run.workdir, outdir=out, particles=np.flatnonzero(good),
                           sketch=200, skip_umap=True, device="cpu"):
        pass
    land = Landscape.load(out / NPZ)
    clusters = land.particle_states()[good]
    state = truth.state[good]
    majority = np.zeros_like(clusters)
    pure = 0
    for m in np.unique(clusters):
        s = state[clusters == m]
        majority[clusters == m] = int(s.mean() >= 0.5)
        pure += max((s == 0).sum(), (s == 1).sum())
    purity = pure / len(state)
    ari_raw = adjusted_rand_score(state, clusters)
    ari = adjusted_rand_score(state, majority)
    per_map_state = np.array([state[land.labels[good] == j].mean()
                              for j in range(land.n_maps)])
    aucs = [roc_auc_score(per_map_state > 0.5, land.coords[:, k]) for k in range(3)]
    sep = max(max(a, 1 - a) for a in aucs)
    print(f"purity {purity:.3f}, ARI (majority state) {ari:.3f}, ARI (clusters) {ari_raw:.3f}, "
          f"best volume-PC state AUC {sep:.3f}")
    assert purity >= 0.9
    assert ari >= 0.6
    assert sep >= 0.9
