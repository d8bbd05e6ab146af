"""Every informative column of a run's .star/.cs is a colouring of its latent space, matched
to the run's particles (through its index); class numbers and text columns are categorical."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import starfile
import yaml

from napari_cryodrgn.analysis.metadata import column_colourings
from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.index import save_index
from napari_cryodrgn.session import Session

N = 120  # the tiny dataset


def test_column_rules():
    n = 10
    cols = {
        "rlnClassNumber": np.arange(n) % 3 + 1,  # few integers: categorical
        "rlnLogLikeliContribution": np.linspace(0, 1, n),  # continuous
        "rlnMicrographName": np.array([f"mic{i % 2}.mrc" for i in range(n)], object),
        "rlnImageName": np.array([f"{i + 1}@p.mrcs" for i in range(n)], object),  # skipped
        "rlnOpticsGroup": np.ones(n, int),  # one value: says nothing
        "uid": np.arange(n),
    }
    out, labels, cat = column_colourings(cols, n, "star: ")
    assert set(out) == {"star: rlnClassNumber", "star: rlnLogLikeliContribution",
                        "star: rlnMicrographName"}
    assert cat == {"star: rlnClassNumber", "star: rlnMicrographName"}
    assert labels["star: rlnMicrographName"] == ["mic0.mrc", "mic1.mrc"]
    np.testing.assert_array_equal(out["star: rlnMicrographName"], np.arange(n) % 2)


@pytest.fixture(scope="module")
def run(train_tiny):
    return train_tiny("metadata_columns", zdim=2, epochs=1)


def _star_run(run, tiny_dataset, tmp_path, ind=None):
    """A copy of the run whose particles are a .star with class numbers and micrographs."""
    df = starfile.read(tiny_dataset["star"], always_dict=True)
    key = "particles" if "particles" in df else next(k for k in df if k != "optics")
    table = df[key]
    table["rlnClassNumber"] = np.arange(len(table)) % 4 + 1
    table["rlnMicrographName"] = [f"mic{i // 30}.mrc" for i in range(len(table))]
    star = Path(tiny_dataset["star"]).parent / f"classes_{tmp_path.name}.star"
    starfile.write(df, star)
    out = Path(shutil.copytree(run, tmp_path / "run"))
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["dataset_args"]["particles"] = str(star)
    if ind is not None:
        save_index(out / "ind.pkl", ind)
        cfg["dataset_args"]["ind"] = str(out / "ind.pkl")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return out


def test_star_columns_colour_the_run(run, tiny_dataset, tmp_path):
    s = Session.open(_star_run(run, tiny_dataset, tmp_path), autosave=False)
    names = s.colouring_names()
    assert "star: rlnClassNumber" in names and "star: rlnMicrographName" in names
    assert not any("rlnImageName" in x for x in names)
    np.testing.assert_array_equal(s.colouring("star: rlnClassNumber"), np.arange(N) % 4 + 1)
    assert s.is_categorical("star: rlnClassNumber") and s.is_categorical("kmeans")
    assert not s.is_categorical("z0")
    assert s.category_labels("star: rlnMicrographName") == [f"mic{i}.mrc" for i in range(4)]


def test_imported_values_colour_the_run(run, tmp_path):
    s = Session.open(run, autosave=False)
    fired = []
    s.events.colourings.connect(lambda: fired.append(1))
    np.save(tmp_path / "score.npy", np.arange(N, dtype=np.float64) * 2)
    name = s.add_colouring_file(tmp_path / "score.npy")
    assert name == "file: score.npy" and name in s.colouring_names() and fired
    np.testing.assert_array_equal(s.colouring(name), np.arange(N) * 2)
    np.savetxt(tmp_path / "short.txt", np.arange(N - 1))
    with pytest.raises(InputError, match="119 values but the run has 120"):
        s.add_colouring_file(tmp_path / "short.txt")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="junk.npy"):
        s.add_colouring_file(tmp_path / "junk.npy")
