"""Our readers and writers against the real cryoDRGN (set CRYODRGN_BIN to its executable).

One cryoDRGN process runs its own CLI entry points (``parse_pose_star``, ``parse_ctf_star``,
``parse_pose_csparc``, ``parse_ctf_csparc``) on files we write, writes a .star from our pose
and CTF pickles (``cryodrgn_utils write_star``) and reads particle images through its
``ImageSource``; the results must equal what our loaders return.
"""

import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_cryodrgn.io.cs import write_particles_cs
from napari_cryodrgn.io.ctf import load_ctf, save_ctf
from napari_cryodrgn.io.particles import open_particles
from napari_cryodrgn.io.poses import load_poses, save_poses
from napari_cryodrgn.io.star import write_particles_star

pytestmark = pytest.mark.interop

DRIVER = """
import json, sys
import numpy as np
from cryodrgn.command_line import main_commands, util_commands
from cryodrgn.source import ImageSource
jobs = json.loads(sys.argv[1])
for argv in jobs["commands"]:
    sys.argv = ["cryodrgn", *argv]
    main_commands()
for argv in jobs["utils"]:
    sys.argv = ["cryodrgn_utils", *argv]
    util_commands()
for src, out in jobs["images"]:
    np.save(out, np.asarray(ImageSource.from_file(src, lazy=True).images()))
"""


def _cryodrgn_python() -> Path:
    exe = os.environ.get("CRYODRGN_BIN")
    if not exe or not Path(exe).is_file():
        pytest.skip("set CRYODRGN_BIN to a cryoDRGN executable to run interop tests")
    return Path(exe).parent / "python"


def _load_plain(path):
    with open(path, "rb") as f:
        return pickle.load(f)


def test_poses_ctf_and_images_agree_with_cryodrgn(tmp_path, poses_ctf, make_stack):
    python = _cryodrgn_python()
    rot, trans, ctf, D, apix = poses_ctf
    n = len(rot)
    stack, data = make_stack("Extract/stack.mrcs", n=n, D=8)
    files = {
        "s31": tmp_path / "p31.star", "s30": tmp_path / "p30.star", "cs": tmp_path / "p.cs",
    }
    write_particles_star(files["s31"], "Extract/stack.mrcs", rot, trans, ctf, apix, D)
    write_particles_star(files["s30"], "Extract/stack.mrcs", rot, trans, ctf, apix, D,
                         relion31=False)
    write_particles_cs(files["cs"], ">Extract/stack.mrcs", rot, trans, ctf, apix, D)
    (tmp_path / "stacks.txt").write_text("Extract/stack.mrcs\n")
    out = {k: tmp_path / f"cd_{k}" for k in files}
    cmds = []
    for k in ("s31", "s30"):
        cmds.append(["parse_pose_star", str(files[k]), "-o", f"{out[k]}_pose.pkl"])
        cmds.append(["parse_ctf_star", str(files[k]), "-o", f"{out[k]}_ctf.pkl"])
    cmds.append(["parse_pose_csparc", str(files["cs"]), "-o", f"{out['cs']}_pose.pkl"])
    cmds.append(["parse_ctf_csparc", str(files["cs"]), "-o", f"{out['cs']}_ctf.pkl"])
    image_files = [files["s31"], files["cs"], tmp_path / "stacks.txt"]
    images = [[str(p), str(tmp_path / f"img{i}.npy")] for i, p in enumerate(image_files)]
    # the other direction: cryoDRGN writes a .star from our pickles (poses for a box of 8)
    save_poses(tmp_path / "ours_pose.pkl", rot, trans)
    ctf8 = ctf.copy()
    ctf8[:, 0] = 8
    save_ctf(tmp_path / "ours_ctf.pkl", ctf8)
    cd_star = tmp_path / "Extract" / "from_cryodrgn.star"
    utils = [["write_star", str(stack), "--poses", str(tmp_path / "ours_pose.pkl"), "--ctf",
              str(tmp_path / "ours_ctf.pkl"), "-o", str(cd_star)]]
    jobs = json.dumps({"commands": cmds, "utils": utils, "images": images})
    res = subprocess.run([str(python), "-c", DRIVER, jobs], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    for k, path in files.items():
        cd_rot, cd_trans = _load_plain(f"{out[k]}_pose.pkl")
        our_rot, our_trans = load_poses(path)
        np.testing.assert_allclose(cd_rot, rot, atol=2e-5)  # star: 6 decimals of degrees
        np.testing.assert_allclose(cd_trans, trans, atol=1e-6)
        np.testing.assert_allclose(our_rot, cd_rot, atol=1e-6)
        np.testing.assert_allclose(our_trans, cd_trans, atol=1e-7)
        cd_ctf = _load_plain(f"{out[k]}_ctf.pkl")
        assert cd_ctf.dtype == np.float32 and cd_ctf.shape == (n, 9)
        np.testing.assert_allclose(load_ctf(path), cd_ctf, rtol=1e-6)
        np.testing.assert_allclose(cd_ctf, ctf, rtol=1e-5, atol=1e-4)
        # cryoDRGN's own pickles load through our restricted loaders unchanged
        np.testing.assert_allclose(load_poses(f"{out[k]}_pose.pkl")[0], cd_rot, atol=1e-6)
        np.testing.assert_allclose(load_ctf(f"{out[k]}_ctf.pkl"), cd_ctf)

    r, t = load_poses(cd_star)
    np.testing.assert_allclose(r, rot, atol=1e-5)
    np.testing.assert_allclose(t, trans, atol=1e-6)
    np.testing.assert_allclose(load_ctf(cd_star, D=8), ctf8, rtol=1e-6)
    np.testing.assert_array_equal(open_particles(cd_star).images(slice(None)), data)

    for src, (_, npy) in zip(image_files, images, strict=True):
        theirs = np.load(npy)
        np.testing.assert_array_equal(open_particles(src).images(slice(None)), theirs)
        np.testing.assert_array_equal(theirs, data)
