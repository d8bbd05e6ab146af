"""``napari-cryodrgn select --kmeans K --kmeans-labels ...`` and the Explore dock's Clusters
tool (``Session.kmeans``) mean the same particles for the same K and seed; an analysis's own
labels (analyze.N/kmeansK/labels.pkl) are used only with ``--kmeans-from analyze``."""

import numpy as np
import pytest

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.index import load_index
from napari_cryodrgn.io.safepickle import save_pickle
from napari_cryodrgn.session import Session

N = 120  # the tiny dataset


@pytest.fixture(scope="module")
def run(train_tiny):
    return train_tiny("kmeans_rule", zdim=2, epochs=2)


def _select(wd, out, k, labels, *extra):
    argv = ["select", str(wd), "--kmeans", str(k), "--kmeans-labels",
            *map(str, labels), "-o", str(out), "--overwrite", *extra]
    assert main(argv) == 0
    return load_index(out, N)


@pytest.mark.parametrize("k, seed", [(3, 0), (5, 11)])
def test_cli_and_explorer_select_the_same_clusters(run, tmp_path, k, seed):
    s = Session.open(run, autosave=False)
    labels = s.kmeans(k, seed=seed)[0]
    assert len(np.unique(labels)) == k
    # an analysis of this epoch with other cluster numbers: not used unless asked for
    other = (labels + 1) % k
    folder = run / f"analyze.{s.epoch}" / f"kmeans{k}"
    folder.mkdir(parents=True, exist_ok=True)
    save_pickle(folder / "labels.pkl", other)
    out = tmp_path / "sel.pkl"
    extra = [] if seed == 0 else ["--kmeans-seed", str(seed)]
    for want in ([0], [1, k - 1]):
        got = _select(run, out, k, want, *extra)
        np.testing.assert_array_equal(got, np.flatnonzero(np.isin(labels, want)))
        if seed == 0:  # the dock's cluster picking (seed 0) selects exactly these particles
            s.select_clusters(want, k)
            np.testing.assert_array_equal(s.selected_indices(original=True), got)
    got = _select(run, out, k, [0], "--kmeans-from", "analyze")
    np.testing.assert_array_equal(got, np.flatnonzero(other == 0))
    assert not np.array_equal(got, np.flatnonzero(labels == 0))


def test_seed_changes_the_clusters_as_in_the_session(run, tmp_path):
    # the seed reaches the k-means: seeds that differ in the Session differ on the CLI too
    s = Session.open(run, autosave=False)
    a, b = s.kmeans(6, seed=0)[0], s.kmeans(6, seed=3)[0]
    out = tmp_path / "s.pkl"
    sel_a = _select(run, out, 6, [2])
    sel_b = _select(run, out, 6, [2], "--kmeans-seed", "3")
    np.testing.assert_array_equal(sel_a, np.flatnonzero(a == 2))
    np.testing.assert_array_equal(sel_b, np.flatnonzero(b == 2))


def test_kmeans_from_analyze_without_an_analysis_is_refused(run, tmp_path, capsys):
    assert main(["select", str(run), "--kmeans", "7", "--kmeans-labels", "0", "--kmeans-from",
                 "analyze", "-o", str(tmp_path / "x.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kmeans7/labels.pkl" in err and "analyze" in err
    assert not (tmp_path / "x.pkl").exists()
