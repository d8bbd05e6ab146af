"""Tiny particle metadata files laid out as RELION and cryoSPARC write them, and their truth.

``python tests/data/real_files/fixtures.py`` (re)writes the committed ``*.star`` and ``*.cs``
files of this folder from the constants below with numpy alone (no napari-cryodrgn code, so
the readers under test never produced their own inputs). Column and field names, their order
and the number formatting follow files written by RELION 3.0.8, 3.1, 4.0 and 5.0 and by
cryoSPARC v2-v4 (see README.md here for the sources). Tests copy the files into a throw-away
project folder with :func:`relion_project` / :func:`cryosparc_project`, which also write the
particle stacks (random images, 16 x 16 pixels) where the files expect them.

Every particle file describes the same 4 particles (``N``): their images, RELION Euler angles
and origins, cryoSPARC axis-angle poses and shifts, and CTF parameters are the ``TRUTH_*``
arrays; box ``D`` = 16.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N, D = 4, 16
IMAGES_PER_STACK = 3

# -- the particles ------------------------------------------------------------------------------
# images: (stack number, 0-based image in the stack)
TRUTH_IMAGES = [(0, 1), (1, 0), (0, 2), (1, 2)]
TRUTH_EULER = np.array([[-45.5, 30.25, 120.0], [170.0, 95.5, -60.75], [10.0, 150.0, 5.5],
                        [-120.25, 60.0, -170.0]])  # RELION rot, tilt, psi (degrees)
TRUTH_SHIFT_PX = np.array([[1.5, -2.0], [-0.75, 0.5], [3.0, 1.25], [0.0, -3.5]])  # pixels
TRUTH_DEFOCUS = np.array([[12000.5, 11500.25, 35.0], [15000.0, 14800.0, -20.5],
                          [9800.75, 9500.5, 100.0], [20000.0, 19000.0, 0.0]])  # A, A, deg
TRUTH_PHASE = np.array([0.0, 10.0, 20.0, 30.0])  # degrees (where a file has phase shifts)
TRUTH_POSE_CS = np.array([[0.1, -0.2, 0.3], [1.2, 0.4, -0.7], [-2.0, 0.5, 1.0],
                          [0.0, 0.0, 2.5]])  # cryoSPARC axis-angle (radians)
KV, CS_MM, AMP = 300.0, 2.7, 0.1
APIX = 2.0  # RELION 3.0 / 3.1 / 4 files and cryoSPARC files
APIX_R5 = 1.6  # the RELION 5 file (a different pixel size: read from its optics table)
# the two-optics-group files: particles 0 and 2 in group 1, 1 and 3 in group 2
GROUP = np.array([1, 2, 1, 2])
OPTICS_2 = {1: (300.0, 2.7, 0.1), 2: (200.0, 2.0, 0.07)}  # kV, Cs, amplitude contrast
MIXED_APIX = {1: 2.0, 2: 1.8}  # the refused file: optics groups disagree on the pixel size

RELION_STACKS = ["Extract/job005/Micrographs/mic1.mrcs", "Extract/job005/Micrographs/mic2.mrcs"]
CS_STACKS = ["J5/extract/008451726104_mic1_particles.mrc",
             "J5/extract/008451726105_mic2_particles.mrc"]
# cryoSPARC uids: the 4 particles, then 2 more that only the passthrough files hold
UIDS = np.array([8862314417210932251, 1390277710362194613, 16721534482712239911,
                 5027319884761260345, 2210577630125998713, 11349860043779022311], dtype="<u8")


def relion_names(stacks=RELION_STACKS) -> list[str]:
    return [f"{i + 1:06d}@{stacks[s]}" for s, i in TRUTH_IMAGES]


# -- .star writing ------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)):
        return f"{int(v):>12d}"
    a = abs(float(v))
    return f"{v:>12.6e}" if a and (a < 1e-3 or a >= 1e5) else f"{v:>12.6f}"


def _loop(name: str, cols: list[str], rows: list[list], header: str, trail: str) -> str:
    out = [header, f"data_{name}", "", f"loop_{trail}"]
    out += [f"_{c} #{i}{trail}" for i, c in enumerate(cols, start=1)]
    out += [" ".join(_fmt(v) for v in row) + trail for row in rows]
    return "\n".join(out) + f"\n{trail}\n\n"


def _v31(name, cols, rows):
    return _loop(name, cols, rows, "\n# version 30001\n", " ")


def _v50(name, cols, rows):
    return _loop(name, cols, rows, "\n# version 50001\n", "")


def relion30_run_data() -> str:
    """Refine3D/job012/run_data.star of RELION 3.0.8: one table, origins in pixels, pixel size
    as detector pixel size (5 um) / magnification (25000) = 2 A, no image size."""
    cols = ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName",
            "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
            "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMagnification",
            "rlnDetectorPixelSize", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution",
            "rlnGroupNumber", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginX",
            "rlnOriginY", "rlnClassNumber", "rlnNormCorrection", "rlnRandomSubset",
            "rlnLogLikeliContribution", "rlnMaxValueProbDistribution",
            "rlnNrOfSignificantSamples"]
    rows = []
    for i, name in enumerate(relion_names()):
        mic = f"MotionCorr/job002/Micrographs/mic{TRUTH_IMAGES[i][0] + 1}.mrc"
        rows.append([1234.0 + 100 * i, 2345.0 - 50 * i, name, mic, *TRUTH_DEFOCUS[i], KV, CS_MM,
                     AMP, 25000.0, 5.0, 0.131140, 4.874623, 1 + TRUTH_IMAGES[i][0],
                     *TRUTH_EULER[i], *TRUTH_SHIFT_PX[i], 1, 0.702323, 1 + i % 2,
                     6613.673071 + i, 0.284086, 3 + i])
    return _loop("", cols, rows, "\n# RELION; version 3.0.8\n", " ")


def relion30_data_images() -> str:
    """A ``data_images`` table as older tools (and RELION 2 / 3.0 scripts) write it: no pixel
    size and no box in the file."""
    cols = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginX",
            "rlnOriginY", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
            "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnPhaseShift"]
    rows = [[name, *TRUTH_EULER[i], *TRUTH_SHIFT_PX[i], *TRUTH_DEFOCUS[i], KV, CS_MM, AMP,
             TRUTH_PHASE[i]] for i, name in enumerate(relion_names())]
    return _loop("images", cols, rows, "\n# RELION; version 3.0.8\n", " ")


OPTICS31 = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName",
            "rlnMicrographOriginalPixelSize", "rlnVoltage", "rlnSphericalAberration",
            "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
            "rlnImageDimensionality"]
PARTICLES31 = ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnClassNumber",
               "rlnAnglePsi", "rlnImageName", "rlnMicrographName", "rlnOpticsGroup",
               "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnDefocusU", "rlnDefocusV",
               "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnPhaseShift",
               "rlnGroupNumber", "rlnAngleRot", "rlnAngleTilt", "rlnOriginXAngst",
               "rlnOriginYAngst", "rlnNormCorrection", "rlnLogLikeliContribution",
               "rlnMaxValueProbDistribution", "rlnNrOfSignificantSamples", "rlnRandomSubset"]


def _particles31(groups, apix_of) -> list[list]:
    rows = []
    for i, name in enumerate(relion_names()):
        s = TRUTH_IMAGES[i][0]
        rows.append([1234.0 + 100 * i, 2345.0 - 50 * i, 0.033098, -999, TRUTH_EULER[i, 2], name,
                     f"MotionCorr/job002/Micrographs/mic{s + 1}.mrc", int(groups[i]), 4.874623,
                     0.131140, *TRUTH_DEFOCUS[i], 0.0, 1.0, TRUTH_PHASE[i], 1 + s,
                     *TRUTH_EULER[i, :2], *(TRUTH_SHIFT_PX[i] * apix_of[groups[i]]), 0.702323,
                     6613.673071 + i, 0.284086, 3 + i, 1 + i % 2])
    return rows


def relion31_run_data() -> str:
    """Refine3D/job012/run_data.star of RELION 3.1: optics + particles, origins in Angstrom."""
    optics = [["opticsGroup1", 1, "mtf_k3_standard_300kV.star", 1.0, KV, CS_MM, AMP, APIX, D, 2]]
    return (_v31("optics", OPTICS31, optics)
            + _v31("particles", PARTICLES31, _particles31([1] * N, {1: APIX})))


def relion31_two_groups() -> str:
    """Two optics groups with one pixel size and box that differ in voltage, Cs and amplitude
    contrast (e.g. Select/job020/particles.star after joining two data sets)."""
    optics = [[f"opticsGroup{g}", g, "mtf_k3_standard_300kV.star", 1.0, *OPTICS_2[g], APIX, D, 2]
              for g in (1, 2)]
    return (_v31("optics", OPTICS31, optics)
            + _v31("particles", PARTICLES31, _particles31(GROUP, {1: APIX, 2: APIX})))


def relion31_mixed_pixel_size() -> str:
    """Two optics groups whose pixel sizes differ (2.0 and 1.8 A): refused for training."""
    optics = [[f"opticsGroup{g}", g, "mtf_k3_standard_300kV.star", 1.0, KV, CS_MM, AMP,
               MIXED_APIX[g], D, 2] for g in (1, 2)]
    return (_v31("optics", OPTICS31, optics)
            + _v31("particles", PARTICLES31, _particles31(GROUP, MIXED_APIX)))


def relion4_class3d_data() -> str:
    """Class3D/job015/run_it025_data.star of RELION 4.0 (optics with
    _rlnCtfDataAreCtfPremultiplied 0, particles in several classes)."""
    optics_cols = OPTICS31 + ["rlnCtfDataAreCtfPremultiplied"]
    optics = [["opticsGroup1", 1, "mtf_k3_standard_300kV.star", 1.0, KV, CS_MM, AMP, APIX, D, 2,
               0]]
    rows = _particles31([1] * N, {1: APIX})
    for i, row in enumerate(rows):
        row[3] = 1 + i % 3  # _rlnClassNumber
    return _v31("optics", optics_cols, optics) + _v31("particles", PARTICLES31, rows)


def relion5_helical_run_data() -> str:
    """Refine3D/job030/run_data.star of RELION 5.0 (``# version 50001``, no trailing blanks)
    from a helical refinement: tube ids, priors and flip ratios, CTF B-factor and scale."""
    optics_cols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName",
                   "rlnMicrographOriginalPixelSize", "rlnVoltage", "rlnSphericalAberration",
                   "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
                   "rlnImageDimensionality", "rlnCtfDataAreCtfPremultiplied"]
    optics = [["opticsGroup1", 1, "mtf_falcon4EC_300kV.star", 0.8, KV, CS_MM, AMP, APIX_R5, D, 2,
               0]]
    cols = ["rlnCoordinateX", "rlnCoordinateY", "rlnHelicalTubeID", "rlnAngleTiltPrior",
            "rlnAnglePsiPrior", "rlnHelicalTrackLengthAngst", "rlnAnglePsiFlipRatio",
            "rlnAngleRotFlipRatio", "rlnImageName", "rlnMicrographName", "rlnOpticsGroup",
            "rlnCtfMaxResolution", "rlnCtfFigureOfMerit", "rlnDefocusU", "rlnDefocusV",
            "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnPhaseShift",
            "rlnGroupNumber", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
            "rlnOriginYAngst", "rlnClassNumber", "rlnNormCorrection", "rlnRandomSubset",
            "rlnLogLikeliContribution", "rlnMaxValueProbDistribution",
            "rlnNrOfSignificantSamples"]
    rows = []
    for i, name in enumerate(relion_names()):
        s = TRUTH_IMAGES[i][0]
        rows.append([1234.0 + 100 * i, 2345.0 - 50 * i, 1 + s, 90.0, TRUTH_EULER[i, 2],
                     42.5 * i, 0.5, 0.5, name, f"MotionCorr/job002/Micrographs/mic{s + 1}.mrc",
                     1, 3.9, 0.14, *TRUTH_DEFOCUS[i], -12.5, 0.98, 0.0, 1 + s,
                     *TRUTH_EULER[i], *(TRUTH_SHIFT_PX[i] * APIX_R5), 1, 0.98, 1 + i % 2,
                     3.374046e+05 + i, 0.284086, 4])
    return _v50("optics", optics_cols, optics) + _v50("particles", cols, rows)


def relion5_tomo_subtomograms() -> str:
    """Refine3D on RELION 5 tomography pseudo-subtomograms (3D .mrc per particle): refused."""
    optics_cols = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                   "rlnTomoTiltSeriesPixelSize", "rlnOpticsGroup", "rlnOpticsGroupName",
                   "rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality",
                   "rlnTomoSubtomogramBinning", "rlnImagePixelSize", "rlnImageSize"]
    optics = [[200.0, 2.0, 0.1, 3.105, 1, "TS_01", 1, 3, 4.0, 12.42, 64]]
    cols = ["rlnTomoName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
            "rlnCenteredCoordinateZAngst", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
            "rlnOpticsGroup", "rlnTomoParticleName", "rlnImageName", "rlnCtfImage",
            "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnGroupNumber",
            "rlnClassNumber", "rlnRandomSubset"]
    rows = [["TS_01", -176.94 + 10 * i, 765.48, 11.16, *TRUTH_EULER[i], 1, f"TS_01/{i + 1}",
             f"Extract/job013/Subtomograms/TS_01/{i + 1}_data.mrc",
             f"Extract/job013/Subtomograms/TS_01/{i + 1}_weights.mrc", -2.41904, 2.498456,
             -6.78404, 1, 1, 1 + i % 2] for i in range(N)]
    return _v50("optics", optics_cols, optics) + _v50("particles", cols, rows)


def relion5_tomo_2d_stacks() -> str:
    """RELION 5 tomography particles extracted as 2D stacks of tilt images (one .mrcs per
    particle, ``data_general`` with _rlnTomoSubTomosAre2DStacks 1): refused."""
    general = ("\n# version 50001\n\ndata_general\n\n_rlnTomoSubTomosAre2DStacks"
               + " " * 23 + "1\n\n")
    optics_cols = ["rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                   "rlnTomoTiltSeriesPixelSize", "rlnOpticsGroup", "rlnOpticsGroupName",
                   "rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality",
                   "rlnTomoSubtomogramBinning", "rlnImagePixelSize", "rlnImageSize"]
    optics = [[300.0, 2.7, 0.1, 1.35, 1, "optics1", 1, 2, 2.0, 2.7, 128]]
    cols = ["rlnTomoName", "rlnTomoParticleName", "rlnTomoVisibleFrames", "rlnImageName",
            "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
            "rlnOriginZAngst", "rlnOpticsGroup", "rlnGroupNumber", "rlnClassNumber"]
    rows = [["TS_01", f"TS_01/{i + 2}", "[0,0,1,1,1,1,1,1,0,0]",
             f"Extract/job013/Subtomograms/TS_01/{i + 2}_stack2d.mrcs", *TRUTH_EULER[i],
             -3.75772, 4.342283, -3.75772, 1, 1, 1] for i in range(N)]
    return general + _v50("optics", optics_cols, optics) + _v50("particles", cols, rows)


def relion31_model() -> str:
    """Refine3D/job012/run_model.star (RELION 3.1): no particles in it."""
    general = ("\n# version 30001\n\ndata_model_general\n\n"
               "_rlnReferenceDimensionality                        3\n"
               "_rlnDataDimensionality                             2\n"
               "_rlnOriginalImageSize                             16\n"
               "_rlnCurrentResolution                       8.000000\n"
               "_rlnNrClasses                                      1\n\n")
    classes = _v31("model_classes", ["rlnReferenceImage", "rlnClassDistribution",
                                     "rlnAccuracyRotations", "rlnAccuracyTranslationsAngst"],
                   [["Refine3D/job012/run_class001.mrc", 1.0, 2.5, 1.2]])
    cls1 = _v31("model_class_1", ["rlnSpectralIndex", "rlnResolution", "rlnAngstromResolution",
                                  "rlnSsnrMap", "rlnGoldStandardFsc"],
                [[k, k / 32.0, 32.0 / max(k, 1), 10.0 / (k + 1), 1.0 - k / 9.0]
                 for k in range(9)])
    groups = _v31("model_groups", ["rlnGroupNumber", "rlnGroupName", "rlnGroupNrParticles",
                                   "rlnGroupScaleCorrection"],
                  [[1, "group_1", 2, 1.0], [2, "group_2", 2, 1.0]])
    return general + classes + cls1 + groups


def relion31_micrographs_ctf() -> str:
    """CtfFind/job003/micrographs_ctf.star (RELION 3.1): micrographs, not particles."""
    optics = [["opticsGroup1", 1, "mtf_k3_standard_300kV.star", 1.0, KV, CS_MM, AMP, 1.0]]
    optics_cols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMtfFileName",
                   "rlnMicrographOriginalPixelSize", "rlnVoltage", "rlnSphericalAberration",
                   "rlnAmplitudeContrast", "rlnMicrographPixelSize"]
    cols = ["rlnMicrographName", "rlnOpticsGroup", "rlnCtfImage", "rlnDefocusU", "rlnDefocusV",
            "rlnCtfAstigmatism", "rlnDefocusAngle", "rlnCtfFigureOfMerit",
            "rlnCtfMaxResolution"]
    rows = [[f"MotionCorr/job002/Micrographs/mic{m + 1}.mrc", 1,
             f"CtfFind/job003/Micrographs/mic{m + 1}.ctf:mrc", *TRUTH_DEFOCUS[m, :2],
             TRUTH_DEFOCUS[m, 0] - TRUTH_DEFOCUS[m, 1], TRUTH_DEFOCUS[m, 2], 0.13, 4.8]
            for m in range(2)]
    return _v31("optics", optics_cols, optics) + _v31("micrographs", cols, rows)


STAR_FILES = {
    "relion30_run_data.star": relion30_run_data,
    "relion30_data_images.star": relion30_data_images,
    "relion31_run_data.star": relion31_run_data,
    "relion31_two_optics_groups.star": relion31_two_groups,
    "relion31_mixed_pixel_size.star": relion31_mixed_pixel_size,
    "relion4_class3d_run_it025_data.star": relion4_class3d_data,
    "relion5_helical_run_data.star": relion5_helical_run_data,
    "relion5_tomo_subtomograms.star": relion5_tomo_subtomograms,
    "relion5_tomo_2d_stacks.star": relion5_tomo_2d_stacks,
    "relion31_run_model.star": relion31_model,
    "relion31_micrographs_ctf.star": relion31_micrographs_ctf,
}

# -- .cs writing --------------------------------------------------------------------------------
# field lists as cryoSPARC v4 writes them (slot by slot; see README.md)
PATH_LEN = max(len(p) + 1 for p in CS_STACKS)
BLOB = [("blob/path", f"S{PATH_LEN}"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4"), ("blob/sign", "<f4"), ("blob/import_sig", "<u8")]
CTF = [("ctf/type", "S1"), ("ctf/exp_group_id", "<u4"), ("ctf/accel_kv", "<f4"),
       ("ctf/cs_mm", "<f4"), ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"),
       ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"), ("ctf/phase_shift_rad", "<f4"),
       ("ctf/scale", "<f4"), ("ctf/scale_const", "<f4"), ("ctf/shift_A", "<f4", (2,)),
       ("ctf/tilt_A", "<f4", (2,)), ("ctf/trefoil_A", "<f4", (2,)), ("ctf/tetra_A", "<f4", (4,)),
       ("ctf/anisomag", "<f4", (4,)), ("ctf/bfactor", "<f4")]
LOCATION = [("location/micrograph_uid", "<u8"), ("location/exp_group_id", "<u4"),
            ("location/micrograph_path", "S64"), ("location/micrograph_shape", "<u4", (2,)),
            ("location/micrograph_psize_A", "<f4"), ("location/center_x_frac", "<f4"),
            ("location/center_y_frac", "<f4")]
PICK = [("pick_stats/ncc_score", "<f4"), ("pick_stats/power", "<f4"),
        ("pick_stats/template_idx", "<u4"), ("pick_stats/angle_rad", "<f4")]


def align(prefix: str, pose_shape=(3,)) -> list:
    """The fields of an alignments3D (pose (3,)) or alignments2D (pose scalar) slot."""
    pose = (f"{prefix}/pose", "<f4", pose_shape) if pose_shape else (f"{prefix}/pose", "<f4")
    return [(f"{prefix}/split", "<u4"), (f"{prefix}/shift", "<f4", (2,)), pose,
            (f"{prefix}/psize_A", "<f4"), (f"{prefix}/error", "<f4"),
            (f"{prefix}/error_min", "<f4"), (f"{prefix}/resid_pow", "<f4"),
            (f"{prefix}/slice_pow", "<f4"), (f"{prefix}/image_pow", "<f4"),
            (f"{prefix}/cross_cor", "<f4"), (f"{prefix}/alpha", "<f4"),
            (f"{prefix}/alpha_min", "<f4"), (f"{prefix}/weight", "<f4"),
            (f"{prefix}/pose_ess", "<f4"), (f"{prefix}/shift_ess", "<f4"),
            (f"{prefix}/class_posterior", "<f4"), (f"{prefix}/class", "<u4"),
            (f"{prefix}/class_ess", "<f4")]


def _table(fields: list, rows: np.ndarray, gt: bool = False, cls: int = 0) -> np.ndarray:
    """Rows ``rows`` (indices into UIDS; 0..3 are the truth particles, 4, 5 extra ones) of a
    table with ``fields``, every slot filled from the truth."""
    out = np.zeros(len(rows), dtype=fields)
    names = out.dtype.names
    t = np.asarray(rows) % N  # the extra particles copy the values of particles 0 and 1
    out["uid"] = UIDS[rows]
    if "blob/path" in names:
        out["blob/path"] = [(">" if gt else "") + CS_STACKS[TRUTH_IMAGES[k][0]] for k in t]
        out["blob/idx"] = [TRUTH_IMAGES[k][1] for k in t]
        out["blob/shape"] = D
        out["blob/psize_A"] = APIX
        out["blob/sign"] = -1.0
        out["blob/import_sig"] = 14411796138066582153
    if "ctf/df1_A" in names:
        out["ctf/type"] = b"i"
        out["ctf/exp_group_id"] = 1
        out["ctf/accel_kv"], out["ctf/cs_mm"], out["ctf/amp_contrast"] = KV, CS_MM, AMP
        out["ctf/df1_A"], out["ctf/df2_A"] = TRUTH_DEFOCUS[t, 0], TRUTH_DEFOCUS[t, 1]
        out["ctf/df_angle_rad"] = np.deg2rad(TRUTH_DEFOCUS[t, 2])
        out["ctf/scale"] = out["ctf/scale_const"] = 1.0
        out["ctf/shift_A"] = [0.3, -0.2]
        out["ctf/anisomag"] = [1.0, 0.0, 0.0, 1.0]
    if "location/micrograph_uid" in names:
        out["location/micrograph_uid"] = [[7001, 7002][TRUTH_IMAGES[k][0]] for k in t]
        out["location/micrograph_path"] = [
            f"J2/motioncorrected/mic{TRUTH_IMAGES[k][0] + 1}_patch_aligned_doseweighted.mrc"
            for k in t]
        out["location/micrograph_shape"] = [4096, 4096]
        out["location/micrograph_psize_A"] = 1.0
        out["location/center_x_frac"] = 0.25 + 0.1 * t
        out["location/center_y_frac"] = 0.6 - 0.1 * t
    if "pick_stats/ncc_score" in names:
        out["pick_stats/ncc_score"] = 0.4 + 0.01 * t
    for prefix in {f.rsplit("/", 1)[0] for f in names if f.endswith("/pose")}:
        if out.dtype[f"{prefix}/pose"].shape == (3,):
            out[f"{prefix}/pose"] = TRUTH_POSE_CS[t]
            out[f"{prefix}/shift"] = TRUTH_SHIFT_PX[t]
            out[f"{prefix}/psize_A"] = APIX
        else:  # 2D: in-plane angle
            out[f"{prefix}/pose"] = np.deg2rad(TRUTH_EULER[t, 2])
            out[f"{prefix}/shift"] = TRUTH_SHIFT_PX[t]
            out[f"{prefix}/psize_A"] = APIX
        out[f"{prefix}/split"] = t % 2
        out[f"{prefix}/class_posterior"] = 1.0
        out[f"{prefix}/class"] = cls
        out[f"{prefix}/alpha"] = 1.0
    return out


def _save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=arr.dtype.hasobject)


def cs_files() -> dict[str, np.ndarray]:
    """Every .cs fixture, by path relative to the cryoSPARC project folder."""
    four, all6 = np.arange(N), np.array([4, 2, 0, 5, 3, 1])  # passthroughs: other order, more
    out = {}
    # an Export job's file: every slot in one table, paths with the '>' prefix
    out["exports/groups/P3_J12_particles/P3_J12_particles_exported.cs"] = _table(
        [("uid", "<u8"), *BLOB, *CTF, *align("alignments3D"), *LOCATION, *PICK,
         *align("alignments2D", None)], four, gt=True)
    # a homogeneous refinement's job folder: alignments in the output, the rest passed through
    out["J12/J12_005_particles.cs"] = _table([("uid", "<u8"), *align("alignments3D")],
                                             np.array([2, 0, 3, 1]))
    out["J12/J12_passthrough_particles.cs"] = _table(
        [("uid", "<u8"), *BLOB, *CTF, *LOCATION, *PICK, *align("alignments2D", None)], all6)
    # Select 2D: blob and 2D alignments in the output, CTF passed through; no 3D alignments
    out["J9/particles_selected.cs"] = _table([("uid", "<u8"), *BLOB, *align("alignments2D", None)],
                                             four)
    out["J9/J9_passthrough_particles_selected.cs"] = _table(
        [("uid", "<u8"), *CTF, *LOCATION, *PICK], all6)
    # Extract From Micrographs: images and CTF, no alignments
    out["J5/extracted_particles.cs"] = _table([("uid", "<u8"), *BLOB, *CTF, *LOCATION, *PICK],
                                              four)
    # Ab-initio with one class: the 'all classes' output holds alignments_class_0
    out["J10/J10_particles_all_classes.cs"] = _table(
        [("uid", "<u8"), *BLOB, *CTF, *align("alignments_class_0")], four)
    # Heterogeneous refinement with 3 classes
    hetero = [("uid", "<u8")] + [f for k in range(3) for f in align(f"alignments_class_{k}")]
    out["J20/J20_00040_particles_all_classes.cs"] = _table(hetero, four)
    out["J20/J20_passthrough_particles_all_classes.cs"] = _table(
        [("uid", "<u8"), *BLOB, *CTF, *LOCATION], all6)
    # ... and the output of its class 1: aligned at box 8 (4 A pixels), shifts in those pixels
    one = _table([("uid", "<u8"), *align("alignments3D")], four, cls=1)
    one["alignments3D/psize_A"] = 2 * APIX
    one["alignments3D/shift"] = TRUTH_SHIFT_PX / 2
    one["alignments3D/class_posterior"] = [0.91, 0.88, 0.97, 0.79]
    out["J20/J20_class_01_00040_particles.cs"] = one
    out["J20/J20_passthrough_particles_class_1.cs"] = _table(
        [("uid", "<u8"), *BLOB, *CTF, *LOCATION], np.array([3, 1, 2, 0]))
    # 3D Classification with 100 classes: a .npy header longer than numpy's default limit
    many = [("uid", "<u8"), *BLOB, *CTF, *align("alignments3D")]
    many += [f for k in range(100) for f in ((f"alignments_class_{k}/class_posterior", "<f4"),
                                             (f"alignments_class_{k}/class", "<u4"),
                                             (f"alignments_class_{k}/class_ess", "<f4"))]
    out["J30/J30_00080_particles.cs"] = _table(many, four)
    # cryoSPARC v2: string fields stored as Python objects (the file holds a pickle)
    fields = [("uid", "<u8"), *BLOB, *CTF, *align("alignments3D")]
    fields = [(f[0], "O") if f[0] in ("blob/path", "ctf/type") else f for f in fields]
    old = _table(fields, four, gt=True)
    old["blob/path"] = [p.encode() for p in old["blob/path"]]
    old["ctf/type"] = [b"i"] * N
    out["J33/cryosparc_P4_J33_004_particles.cs"] = old
    return out


def write_all(folder: Path = HERE) -> None:
    """(Re)write every fixture file into ``folder`` (stars flat; .cs under cryosparc/)."""
    for name, make in STAR_FILES.items():
        (folder / name).write_text(make())
    for rel, arr in cs_files().items():
        path = folder / "cryosparc" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, arr)


# -- projects for the tests ---------------------------------------------------------------------
def stack_images(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(IMAGES_PER_STACK, D, D)).astype(np.float32) for _ in range(2)]


def truth_images(stacks: list[np.ndarray]) -> np.ndarray:
    return np.stack([stacks[s][i] for s, i in TRUTH_IMAGES])


def _write_stack(path: Path, data: np.ndarray, apix: float, volume_header: bool) -> None:
    """A float32 MRC stack written with numpy only; ``volume_header`` writes it as cryoSPARC
    does (a .mrc whose header says volume: space group 1, mz = nz)."""
    nz, ny, nx = data.shape
    ints = np.zeros(256, "<i4")
    floats = ints.view("<f4")
    ints[:4] = nx, ny, nz, 2
    ints[7:10] = nx, ny, nz if volume_header else 1
    floats[10:13] = nx * apix, ny * apix, (nz if volume_header else 1) * apix
    floats[13:16] = 90.0
    ints[16:19] = 1, 2, 3
    ints[22] = 1 if volume_header else 0
    raw = bytearray(ints.tobytes())
    raw[208:212] = b"MAP "
    raw[212:216] = b"\x44\x44\x00\x00"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(raw) + data.astype("<f4").tobytes())


def relion_project(root: Path, star: str, job: str = "Refine3D/job012",
                   as_name: str = "run_data.star", seed: int = 0) -> tuple[Path, np.ndarray]:
    """A RELION project under ``root``: the stacks in Extract/job005/Micrographs/ and fixture
    ``star`` copied to ``job/as_name``; returns the .star path and the truth images."""
    stacks = stack_images(seed)
    for rel, data in zip(RELION_STACKS, stacks, strict=True):
        _write_stack(root / rel, data, APIX, volume_header=False)
    dest = root / job / as_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / star, dest)
    return dest, truth_images(stacks)


def cryosparc_project(root: Path, seed: int = 0) -> np.ndarray:
    """A cryoSPARC project under ``root``: the extracted stacks (.mrc) in J5/extract/ and every
    .cs fixture in its job folder; returns the truth images."""
    stacks = stack_images(seed)
    for rel, data in zip(CS_STACKS, stacks, strict=True):
        _write_stack(root / rel, data, APIX, volume_header=True)
    shutil.copytree(HERE / "cryosparc", root, dirs_exist_ok=True)
    return truth_images(stacks)


if __name__ == "__main__":
    write_all()
    print(f"wrote {len(STAR_FILES)} .star and {len(cs_files())} .cs files under {HERE}")
