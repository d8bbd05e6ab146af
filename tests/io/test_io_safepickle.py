import os
import pickle

import numpy as np
import pytest
import torch

from napari_cryodrgn.errors import InputError
from napari_cryodrgn.io.safepickle import (
    load_pickle,
    load_pickles,
    load_torch_checkpoint,
    save_pickle,
)


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Writer:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('x')",))


@pytest.mark.parametrize("payload", [_Shell, _Writer])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = tmp_path / "z.pkl"
    # hidden behind a harmless-looking array, as a crafted pose file would be
    path.write_bytes(pickle.dumps((np.zeros(3), payload(marker))))
    with pytest.raises(InputError, match="refuses to load") as err:
        load_pickle(path)
    assert str(path) in str(err.value)
    assert "could run code" in str(err.value)
    assert ("system" in str(err.value)) or ("eval" in str(err.value))
    assert not marker.exists()


def test_numpy_objects_round_trip_all_protocols(tmp_path):
    objs = (
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.zeros(2, dtype=[("a", "<f4"), ("b", "S4"), ("c", "<u4", (2,))]),
        np.asfortranarray(np.eye(3)),
        np.arange(3, dtype=">f4"),
        np.float64(1.5),
        {"k": [1, 2.0, "s", b"b", None, True]},
    )
    for proto in (2, 4, 5):
        path = tmp_path / f"p{proto}.pkl"
        path.write_bytes(pickle.dumps(objs, protocol=proto))
        back = load_pickle(path)
        plain = pickle.loads(path.read_bytes())  # same result as an unrestricted load
        for a, b, c in zip(objs[:5], back[:5], plain[:5], strict=True):
            np.testing.assert_array_equal(a, b)
            assert b.dtype == c.dtype
        assert back[5] == objs[5]


def test_numpy1_module_paths_are_accepted(tmp_path):
    # numpy 1.x pickles name numpy.core instead of numpy._core
    raw = pickle.dumps(np.arange(4.0), protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in raw
    path = tmp_path / "old.pkl"
    path.write_bytes(raw)
    np.testing.assert_array_equal(load_pickle(path), np.arange(4.0))


def test_consecutive_pickles_and_atomic_save(tmp_path):
    mu, logvar = np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32)
    path = tmp_path / "z.1.pkl"
    save_pickle(path, mu, logvar)
    # the layout cryoDRGN reads: two pickle.load calls on one file handle
    with open(path, "rb") as f:
        np.testing.assert_array_equal(pickle.load(f), mu)
        np.testing.assert_array_equal(pickle.load(f), logvar)
    a, b = load_pickles(path)
    np.testing.assert_array_equal(b, logvar)
    np.testing.assert_array_equal(load_pickle(path), mu)
    assert len(load_pickles(path, n=1)) == 1
    with pytest.raises(InputError, match="z.1.pkl holds 2 pickled objects"):
        load_pickles(path, n=3)
    assert [p.name for p in tmp_path.iterdir()] == ["z.1.pkl"]


def test_bad_pickle_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.pkl does not exist"):
        load_pickle(tmp_path / "missing.pkl")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty.pkl"):
        load_pickle(empty)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(pickle.dumps(np.arange(100))[:-20])
    with pytest.raises(InputError, match="junk.pkl is not a readable pickle"):
        load_pickle(junk)


def test_torch_checkpoint(tmp_path):
    path = tmp_path / "weights.1.pkl"
    torch.save({"epoch": 1, "model_state_dict": {"w": torch.ones(2)}}, path)
    ckpt = load_torch_checkpoint(path, "cpu")
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model_state_dict"]["w"], torch.ones(2))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    torch.save({"x": _Shell(marker)}, evil)
    with pytest.raises(InputError, match="evil.pkl refuses to load"):
        load_torch_checkpoint(evil, "cpu")
    assert not marker.exists()
    with pytest.raises(InputError, match="nothere.pkl does not exist"):
        load_torch_checkpoint(tmp_path / "nothere.pkl", "cpu")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pkl"):
        load_torch_checkpoint(junk, "cpu")
