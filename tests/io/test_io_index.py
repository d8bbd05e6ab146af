import pickle

import numpy as np
import pytest

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.index import load_index, save_index, save_selection


def test_round_trip_pkl_and_txt(tmp_path):
    save_index(tmp_path / "ind.pkl", [5, 1, 3])
    out = load_index(tmp_path / "ind.pkl", n=6)
    assert out.dtype == np.int64 and list(out) == [5, 1, 3]
    with open(tmp_path / "ind.pkl", "rb") as f:  # a plain int64 array, as cryoDRGN writes
        assert pickle.load(f).dtype == np.int64
    (tmp_path / "ind.txt").write_text("0\n2\n4\n")
    assert list(load_index(tmp_path / "ind.txt", n=5)) == [0, 2, 4]


def test_selection_writes_inverse(tmp_path):
    a, b = save_selection(tmp_path / "keep.pkl", np.array([7, 2, 0]), n=8)
    assert b.name == "keep_inverse.pkl"
    assert list(load_index(a, 8)) == [0, 2, 7]
    assert list(load_index(b, 8)) == [1, 3, 4, 5, 6]


def test_out_of_range(tmp_path):
    save_index(tmp_path / "other.pkl", [0, 99])
    with pytest.raises(InputError, match="index file .*other.pkl holds indices up to 99 but the "
                                         "stack has 10 particles: is it from another dataset"):
        load_index(tmp_path / "other.pkl", n=10)


def test_duplicates_and_bad_content(tmp_path):
    with open(tmp_path / "dup.pkl", "wb") as f:
        pickle.dump(np.array([1, 2, 2]), f)
    with pytest.raises(InputError, match="dup.pkl lists particle 2 more than once"):
        load_index(tmp_path / "dup.pkl", n=5)
    with open(tmp_path / "neg.pkl", "wb") as f:
        pickle.dump(np.array([-1, 2]), f)
    with pytest.raises(InputError, match="neg.pkl holds a negative index"):
        load_index(tmp_path / "neg.pkl", n=5)
    with open(tmp_path / "mat.pkl", "wb") as f:
        pickle.dump(np.zeros((2, 2), int), f)
    with pytest.raises(InputError, match="mat.pkl is not an index file"):
        load_index(tmp_path / "mat.pkl", n=5)
    (tmp_path / "words.txt").write_text("1\nfoo\n")
    with pytest.raises(InputError, match="words.txt is not an index file"):
        load_index(tmp_path / "words.txt", n=5)
    with pytest.raises(InputError, match="missing.pkl does not exist"):
        load_index(tmp_path / "missing.pkl", n=5)
