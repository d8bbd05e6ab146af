"""Command line: ``napari-cryodrgn simulate | train | eval-vol | analyze | demo | select |
export | ...``.

Each subcommand is a thin face over library functions; user errors print one line and exit 2.
Commands that cryoDRGN also has answer to its name too (``train_vae``, ``eval_vol``,
``backproject_voxel``, ...): hyphenated names are ours, underscored ones cryoDRGN's, given as
argparse aliases of one parser.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import InputError, PeerFailed, TrainingDiverged

EXIT_PEER, EXIT_INPUT, EXIT_DIVERGED = 1, 2, 3


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="write a simulated heterogeneous dataset with ground truth")
    p.add_argument("outdir", type=Path)
    p.add_argument("-n", type=int, default=10000, help="number of particles (default 10000)")
    p.add_argument("-D", type=int, default=64, help="box size in pixels, even (default 64)")
    p.add_argument("--apix", type=float,
                   help="pixel size in Angstrom (default 192 / D: a 192 A box, 3.0 A at D=64)")
    p.add_argument("--snr", type=float, default=0.1, help="signal-to-noise ratio (default 0.1)")
    p.add_argument("--junk", type=float, default=0.1, help="fraction of junk particles (0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)


def _add_train(sub):
    from .training.settings import add_arguments

    p = sub.add_parser("train", aliases=["train_vae"],
                       help="train the heterogeneity VAE (cryoDRGN train_vae flags)")
    add_arguments(p)  # made from the training settings' declaration (training/settings.py)
    p.set_defaults(func=cmd_train)


def _add_eval_vol(sub):
    p = sub.add_parser(
        "eval-vol", aliases=["eval_vol"], help="decode maps at latent points of a trained run",
        description="Decode maps at latent points of a trained run (ours or cryoDRGN's): "
        "WORKDIR [--epoch N], or cryoDRGN's form WEIGHTS.pkl -c CONFIG.yaml.")
    p.add_argument("workdir", type=Path, metavar="WORKDIR|WEIGHTS",
                   help="training folder, or a weights .pkl (with -c, or its folder's "
                   "config.yaml)")
    p.add_argument("-c", "--config", type=Path, help="config.yaml (cryoDRGN's form)")
    p.add_argument("--epoch", type=int, help="epoch to use (default: the latest)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-z", type=float, nargs="+", help="one latent point (zdim values)")
    g.add_argument("--zfile", type=Path, help="text file with one latent point per row")
    g.add_argument("--z-start", type=float, nargs="+",
                   help="first point of a straight line in latent space (with --z-end, -n)")
    p.add_argument("--z-end", type=float, nargs="+", help="last point of the line")
    p.add_argument("-n", type=int, default=10, help="maps along --z-start..--z-end (10)")
    p.add_argument("-o", "--out", required=True, type=Path,
                   help="output folder (vol_001.mrc ...), or a .mrc file for one point")
    p.add_argument("--prefix", default="vol_", help="map file prefix in a folder (vol_)")
    p.add_argument("--vol-start-index", type=int, default=1,
                   help="number of the first map file (1)")
    p.add_argument("--flip", action="store_true", help="flip the maps' handedness")
    p.add_argument("--invert", action="store_true", help="invert the maps' contrast")
    p.add_argument("--Apix", type=float, help="voxel size (default: the run's pixel size)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.set_defaults(func=cmd_eval_vol)


def _add_analyze(sub):
    p = sub.add_parser("analyze", help="PCA, UMAP, k-means, traversals, maps and figures of one "
                       "epoch (cryoDRGN's analyze.N/ layout)")
    p.add_argument("workdir", type=Path, help="training folder (ours or cryoDRGN's)")
    p.add_argument("--epoch", type=int, help="epoch to analyse (default: the latest)")
    p.add_argument("--ksample", type=int, default=20, help="k-means clusters (default 20)")
    p.add_argument("--pc", type=int, default=2, help="principal components to traverse (2)")
    p.add_argument("--n-per-pc", type=int, default=10, help="maps per traversal (default 10)")
    p.add_argument("--anchors", type=int, nargs="+", metavar="IND",
                   help="particle indices for the graph and direct traversals (default: the "
                   "particles nearest the ends of the PC1 traversal)")
    p.add_argument("--max-neighbors", type=int, default=10,
                   help="graph traversal: nearest neighbours considered per particle (10)")
    p.add_argument("--avg-neighbors", type=float, default=5.0,
                   help="graph traversal: average links kept per particle (5)")
    p.add_argument("--skip-umap", action="store_true", help="no UMAP embedding")
    p.add_argument("--skip-vol", action="store_true", help="no maps")
    p.add_argument("--Apix", type=float, help="voxel size (default: the run's pixel size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16", "fp16"],
                   help="map decoding precision (default fp32)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("-o", "--outdir", type=Path, help="output folder (default WORKDIR/analyze.N)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing analysis")
    p.set_defaults(func=cmd_analyze)


def _add_demo(sub):
    p = sub.add_parser("demo", help="simulate a dataset, train on it, score the result against "
                       "the truth and explore the latent space (analyze)")
    p.add_argument("outdir", type=Path, nargs="?", default=Path("demo_run"))
    p.add_argument("-n", type=int, default=8000)
    p.add_argument("-D", type=int, default=32)
    p.add_argument("--snr", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--skip-explore", action="store_true",
                   help="skip the latent-space analysis (PCA, UMAP, k-means, traversals)")
    p.set_defaults(func=cmd_demo)


def _add_select(sub):
    p = sub.add_parser(
        "select", help="select particles of a run (k-means clusters, lasso polygon) and save "
        "cryoDRGN index pickles",
        description="Select particles of a trained run by k-means clusters and/or a lasso "
        "polygon drawn on a 2D view, and write IND.pkl (the selection) and IND_inverse.pkl "
        "(the rest of the run's particles), both in original-stack numbering (composed with "
        "the run's --ind), as cryoDRGN's filter writes them. Criteria are combined as a union; "
        "--invert then keeps the rest (e.g. lasso the junk, --invert, keep the good).",
        epilog="Polygon file: one vertex per line, 'x y' in the view's coordinates (UMAP1 "
        "UMAP2, or PC1 PC2 scores for pca); '#' starts a comment; closed implicitly; at least "
        "3 vertices. UMAP is the explorer's (WORKDIR/analyze.N/umap.pkl or "
        "WORKDIR/explore/umap.N.pkl), computed and cached when missing.")
    p.add_argument("workdir", type=Path, help="training folder (ours or cryoDRGN's)")
    p.add_argument("--epoch", type=int, help="epoch whose latents to use (default: latest)")
    p.add_argument("--kmeans", type=int, metavar="K",
                   help="number of k-means clusters (default 20)")
    p.add_argument("--kmeans-seed", type=int, default=0, metavar="S",
                   help="k-means seed (default 0, the Explore dock's)")
    p.add_argument("--kmeans-from", choices=["explorer", "analyze"], default="explorer",
                   help="explorer (default): k-means on the epoch's latents as the Explore "
                   "dock's Clusters tool computes it, so the same K and seed select the same "
                   "particles; analyze: the labels in WORKDIR/analyze.N/kmeansK/labels.pkl, "
                   "made by that analysis's own run (its --seed, or cryoDRGN's k-means), whose "
                   "cluster numbers may differ")
    p.add_argument("--kmeans-labels", type=int, nargs="+", metavar="L",
                   help="k-means clusters to select (0-based)")
    p.add_argument("--polygon", type=Path, metavar="FILE", help="lasso polygon file (x y per "
                   "line)")
    p.add_argument("--space", default="umap",
                   help="view the polygon was drawn on: umap (default), pca (PC1/PC2), "
                   "pca:i,j or z:i,j (0-based dimensions)")
    p.add_argument("--saved", action="store_true",
                   help="add the explorer's saved selection (WORKDIR/explore/selection.npy)")
    p.add_argument("--ind", type=Path, metavar="RUN_IND.pkl",
                   help="the index file the run was trained with (its --ind), when the one "
                   "config.yaml records is not found, e.g. after moving the run folder")
    p.add_argument("--invert", action="store_true", help="keep the particles not selected")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="IND.pkl",
                   help="index pickle to write (IND_inverse.pkl is written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing index files")
    p.set_defaults(func=cmd_select)


def _add_landscape(sub):
    p = sub.add_parser(
        "analyze_landscape", aliases=["analyze-landscape"],
        help="the conformational landscape from the maps: maps sampled across the latent "
        "space, masked, volume PCA, clustered, mapped back to the particles "
        "(cryoDRGN's landscape.N/ layout)",
        description="Sample N maps at the k-means centres of the latent space, reduce them to "
        "a d-voxel box, mask them (the mean map above half its maximum, dilated; or --mask), "
        "reduce them by PCA in volume space, cluster them (agglomerative, M clusters) and give "
        "each particle its map's cluster. Writes cryoDRGN's analyze_landscape layout in "
        "WORKDIR/landscape.N (-o elsewhere); the Explore dock then offers the 'landscape' view "
        "and the 'landscape cluster' colouring.")
    p.add_argument("workdir", type=Path, help="training folder (ours or cryoDRGN's)")
    p.add_argument("epoch_pos", nargs="?", type=int, metavar="EPOCH",
                   help="epoch to analyse, as cryoDRGN takes it (or --epoch; default latest)")
    p.add_argument("--epoch", type=int, help="epoch to analyse (default: the latest)")
    p.add_argument("-N", "--sketch-size", type=int, default=1000, dest="sketch",
                   help="maps to sample (k-means centres; default 1000)")
    p.add_argument("-d", "--downsample", type=int, default=128,
                   help="box of the sampled maps (default 128; the run's box if smaller)")
    p.add_argument("--mask", default="auto", metavar="auto|MRC",
                   help="auto (default): the mean map above --thresh, dilated by --dilate; or "
                   "a mask file of the sampled maps' box")
    p.add_argument("--thresh", type=float, help="auto mask threshold (default: half the mean "
                   "map's maximum)")
    p.add_argument("--dilate", type=float, default=5.0, help="auto mask dilation in Angstrom "
                   "(default 5)")
    p.add_argument("--pc-dim", type=int, default=20, help="volume PCA dimensions (default 20)")
    p.add_argument("-M", type=int, default=10, dest="clusters",
                   help="clusters of maps (default 10)")
    p.add_argument("--linkage", default="average",
                   help="agglomerative linkage: average (default), ward, complete, single")
    p.add_argument("--ind", type=Path, metavar="IND.pkl",
                   help="sample the maps from these particles only (original-stack numbering, "
                   "as select and Save index write it; e.g. the particles kept after junk "
                   "filtering); the others are placed at their nearest sampled map")
    p.add_argument("--skip-umap", action="store_true", help="no UMAP embedding")
    p.add_argument("--Apix", type=float, help="voxel size (default: the run's pixel size)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="map decoding precision (default auto)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.add_argument("-o", "--outdir", type=Path, help="output folder (default "
                   "WORKDIR/landscape.N)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing analysis")
    p.set_defaults(func=cmd_landscape)


def _add_match(sub):
    p = sub.add_parser(
        "match", help="find where known structures live in a run's latent space (reference "
        "maps against the maps at the k-means centres)",
        description="Resample each reference map onto the run's grid (any box and voxel "
        "size), decode the maps at the run's k-means centres (the Explore dock's clusters for "
        "the same K), and correlate every centre map with every reference. Prints the best "
        "clusters per reference and writes match.csv (one row per centre) and "
        "match_<ref>.txt (one value per particle: its cluster's correlation; colour the "
        "Explore dock by it with 'Colour by file...'). References must be in the run's frame "
        "(fit them to one of its maps first, e.g. with ChimeraX fitmap).")
    p.add_argument("workdir", type=Path, help="training folder (ours or cryoDRGN's)")
    p.add_argument("refs", type=Path, nargs="+", metavar="REF.mrc", help="reference maps")
    p.add_argument("--epoch", type=int, help="epoch to use (default: latest)")
    p.add_argument("-k", "--kmeans", type=int, default=20, metavar="K",
                   help="k-means centres to decode (default 20)")
    p.add_argument("--lowpass", type=float, metavar="A",
                   help="compare both maps low-passed to this resolution (Angstrom)")
    p.add_argument("--ref-apix", type=float, metavar="A",
                   help="voxel size of the references when their headers record none")
    p.add_argument("-o", "--outdir", type=Path, help="output folder (default WORKDIR/match.N)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier match's files")
    p.set_defaults(func=cmd_match)


def _add_export(sub):
    p = sub.add_parser(
        "export", help="write the particles of an index file as .star, .cs and/or .mrcs",
        description="Write the particles of IND.pkl (original-stack numbering, as written by "
        "select, the explorer or cryoDRGN's filter) as a RELION .star (every column, the "
        "optics table and the formatting kept; stack paths as written), a cryoSPARC .cs "
        "(every field) and/or a new .mrcs stack (streamed). Sources: --source (the .star or "
        ".cs of the original particles) for the output of its type; else, with WORKDIR, the "
        "run's particles file when it is that type, else the .star/.cs its poses or CTF came "
        "from (config.yaml records them). The .mrcs reads --particles, else the run's "
        "particles, else --source.")
    p.add_argument("workdir", type=Path, nargs="?",
                   help="training folder whose dataset the index refers to (optional with "
                   "--source/--particles)")
    p.add_argument("--ind", required=True, type=Path, metavar="IND.pkl",
                   help="index pickle (or .txt, one index per line) in original numbering")
    p.add_argument("--star", type=Path, metavar="OUT.star", help="RELION .star subset")
    p.add_argument("--cs", type=Path, metavar="OUT.cs", help="cryoSPARC .cs subset")
    p.add_argument("--mrcs", type=Path, metavar="OUT.mrcs", help="new stack of the images")
    p.add_argument("--source", type=Path, metavar="FILE",
                   help=".star or .cs listing every particle of the original stack")
    p.add_argument("--particles", type=Path, metavar="FILE",
                   help="images for --mrcs (.mrcs, .star, .cs or .txt; default: the run's)")
    p.add_argument("--datadir", type=Path, help="folder that relative stack paths resolve to")
    p.add_argument("--Apix", type=float, help="pixel size of the .mrcs (default: the run's, "
                   "else the stack header's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_export)


EVAL_IMAGES_DOC = """\
Encode a particle stack with a trained run (cryoDRGN's eval_images): z_mu and z_logvar of every
particle, in the order of the (indexed) particles, and per-particle losses at z = z_mu. The
images are preprocessed as the run was trained: window, sign inversion and normalisation from
its config.yaml (the training std, not re-estimated from the new stack), the encoder's in-plane
turning and input mode from its model_args. --uninvert-data, --no-window and --window-r replace
the config's values (with a warning when they differ from it). These are the encoder's z: for
an epoch whose latents were refined through the decoder (training's last epoch, or refine_z),
they match z.N.encoder.pkl, not z.N.pkl.

"""
EVAL_IMAGES_OUTPUTS = """\
Outputs are cryoDRGN's: Z.pkl holds z_mu then z_logvar (N x zdim float32, two pickles back to
back, like z.N.pkl); the losses pickle is a dict with the means 'loss', 'recon' (masked Hartley
MSE) and 'kld' (cryoDRGN's keys), plus 'loss_per_particle', 'recon_per_particle',
'kld_per_particle' ((N,) float32 arrays) and 'beta'. Translations are turned into pixels with
the box D (cryoDRGN 4.3.1 uses D + 1, so its z of shifted particles differ slightly). Existing
outputs are kept unless --overwrite."""
EVAL_IMAGES_FORMS = """\
Two forms, told apart by their arguments alone:
  ours:      eval-images RUN PARTICLES --poses P [--ctf C] -o Z.pkl [--losses L.pkl] [--epoch N]
  cryoDRGN:  eval_images PARTICLES WEIGHTS.pkl -c config.yaml -o LOSSES.pkl --out-z Z.pkl
             --poses P [--ctf C]
The command line is cryoDRGN's form when the second positional argument ends in .pkl (a
weights file; particle files never do) or --out-z or -c is given; otherwise it is ours, and
RUN must be a training folder (ours or cryoDRGN's). Either spelling takes either form."""


def _add_eval_images(sub):
    p = sub.add_parser(
        "eval-images", aliases=["eval_images"],
        help="latent points and losses of a particle stack through a trained run's encoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=EVAL_IMAGES_DOC + EVAL_IMAGES_FORMS, epilog=EVAL_IMAGES_OUTPUTS)
    p.add_argument("first", metavar="RUN|PARTICLES",
                   help="ours: training folder; cryoDRGN's form: particles")
    p.add_argument("second", metavar="PARTICLES|WEIGHTS",
                   help="ours: particles (.mrcs, .mrc, .star, .cs, .txt) of the run's box; "
                   "cryoDRGN's form: weights .pkl")
    p.add_argument("--poses", required=True, help="pose .pkl, .star or .cs of the particles")
    p.add_argument("--ctf", help="CTF .pkl, .star or .cs of the particles")
    p.add_argument("-o", dest="out", required=True, type=Path, metavar="PKL",
                   help="ours: the z pickle to write; cryoDRGN's form: the losses pickle")
    p.add_argument("--losses", type=Path, metavar="PKL", help="ours: losses pickle to write")
    p.add_argument("--out-z", type=Path, metavar="PKL", help="cryoDRGN's form: z pickle")
    p.add_argument("-c", "--config", type=Path, metavar="YAML",
                   help="cryoDRGN's form: the run's config.yaml (default: beside WEIGHTS)")
    p.add_argument("--epoch", type=int, help="ours: epoch of RUN (default: the latest)")
    p.add_argument("--ind", help="index .pkl (or .txt) selecting particles, in that order")
    p.add_argument("--datadir", help="folder that relative stack paths in .star/.cs resolve to")
    p.add_argument("-b", "--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--beta", type=float, help="KL weight of the total loss (default 1/zdim)")
    p.add_argument("--uninvert-data", dest="invert_data", action="store_const", const=False,
                   help="do not sign-invert (default: as the run was trained)")
    p.add_argument("--no-window", dest="window", action="store_const", const=False,
                   help="no real-space window (default: as the run was trained)")
    p.add_argument("--window-r", type=float, help="window radius (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    same = "accepted for cryoDRGN compatibility; no effect"
    p.add_argument("--lazy", action="store_true", help=same + " (stacks are always read lazily)")
    p.add_argument("--log-interval", type=int, metavar="N", help=same)
    p.add_argument("--max-threads", type=int, metavar="N", help=same)
    p.add_argument("-v", "--verbose", action="store_true", help=same)
    p.set_defaults(func=cmd_eval_images)


DOWNSAMPLE_EPILOG = """\
Outputs, by the suffix of -o:
  OUT.mrcs (or .mrc)  one stack, particles in the order of --ind
  OUT.mrcs --chunk K  OUT.0.mrcs, OUT.1.mrcs, ... of K images each and OUT.txt listing them
  OUT.star            (from a .star) one new stack per input stack, named as it, in --outdir
                      (default: beside OUT.star), and a copy of the input .star pointing at
                      them with the pixel size, box and origins in pixels updated
  OUT.txt             (from a .txt) one new stack per input stack, listed in OUT.txt
  --is-vol            the input is a cubic map, written to OUT.mrc
With --ind, .star and .txt outputs keep the input's order. Pixel values scale by (D/d)^2 and the
pixel size becomes round(Apix * D / d, 6), as in cryoDRGN. All outputs are written under
temporary names and renamed once complete; existing files are kept unless --overwrite."""


def _add_downsample(sub):
    p = sub.add_parser(
        "downsample", help="downsample particle images or a map by Fourier cropping "
        "(cryoDRGN's downsample)", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Downsample particle images (or a map) to a smaller box by cropping their "
        "Fourier transforms, streamed in batches so memory stays flat; the images equal "
        "cryoDRGN 4.3.1's.", epilog=DOWNSAMPLE_EPILOG)
    p.add_argument("input", help=".mrcs/.mrc stack, .star, .cs or .txt (a .mrc map with "
                   "--is-vol)")
    p.add_argument("-D", type=int, required=True, help="new box size in pixels (even, at most "
                   "the input's)")
    p.add_argument("-o", "--outfile", required=True, type=Path,
                   help="output .mrcs/.mrc stack, .star or .txt (see below)")
    p.add_argument("--outdir", type=Path, help="folder for the new stacks of .star, .txt and "
                   "--chunk outputs (default: beside -o)")
    p.add_argument("-b", "--batch-size", type=int,
                   help="images per batch (default: about 32 MB of input images)")
    p.add_argument("--is-vol", action="store_true", help="the input is a 3D map")
    p.add_argument("--chunk", type=int, metavar="K",
                   help="write OUT.0.mrcs, OUT.1.mrcs, ... of K images each and OUT.txt")
    p.add_argument("--datadir", help="folder that relative stack paths in .star/.cs/.txt "
                   "resolve to")
    p.add_argument("--max-threads", type=int, help="FFT threads (default: the usable cores, "
                   "at most 16)")
    p.add_argument("--ind", help="index .pkl (or .txt) of the particles to keep")
    p.add_argument("--Apix", type=float, help="pixel size of the input in Angstrom, for an "
                   "input that gives none (or to replace its value)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_downsample)


def _parse_parser(sub, name: str, help_: str, input_help: str, out_flags=("-o",)):
    p = sub.add_parser(name.replace("_", "-"), aliases=[name], help=help_,
                       description=help_ + " (the pickle cryoDRGN 4.3.1's command writes).")
    p.add_argument("input", help=input_help)
    p.add_argument(*out_flags, dest="out", required=True, type=Path, metavar="PKL",
                   help="output pickle")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def _add_parse_pose_star(sub):
    p = _parse_parser(sub, "parse_pose_star", "poses of a RELION .star as a cryoDRGN pose pickle",
                      "RELION .star (3.0, 3.1 or later)", out_flags=("-o", "--outpkl"))
    p.add_argument("-D", type=int, help="box size in pixels: replaces the file's "
                   "_rlnImageSize (translations are divided by it), as in cryoDRGN")
    p.add_argument("--Apix", type=float, help="pixel size in Angstrom: replaces the file's for "
                   "origins given in Angstrom, as in cryoDRGN")
    p.set_defaults(func=cmd_parse_pose_star)


def _add_parse_ctf_star(sub):
    p = _parse_parser(sub, "parse_ctf_star", "CTF parameters of a RELION .star as a cryoDRGN "
                      "CTF pickle", "RELION .star (3.0, 3.1 or later)")
    p.add_argument("--png", type=Path, help="also plot the first particle's CTF to this PNG")
    g = p.add_argument_group("values that replace the file's for every particle (as in "
                             "cryoDRGN), or supply missing ones")
    g.add_argument("-D", type=int, help="image size in pixels")
    g.add_argument("--Apix", type=float, help="pixel size in Angstrom")
    g.add_argument("--kv", type=float, help="accelerating voltage (kV)")
    g.add_argument("--cs", type=float, help="spherical aberration (mm)")
    g.add_argument("-w", type=float, help="amplitude contrast ratio")
    g.add_argument("--ps", type=float, help="phase shift (degrees; default: the file's, else 0)")
    p.set_defaults(func=cmd_parse_ctf_star)


def _add_parse_pose_csparc(sub):
    p = _parse_parser(sub, "parse_pose_csparc", "poses of a cryoSPARC .cs as a cryoDRGN pose "
                      "pickle", "cryoSPARC particles .cs")
    p.add_argument("-D", type=int, help="box size in pixels, for a file without blob/shape")
    p.add_argument("--abinit", action="store_true", help="poses of an ab-initio job "
                   "(alignments_class_0)")
    p.add_argument("--hetrefine", action="store_true", help="a heterogeneous refinement at half "
                   "the box: shifts doubled (unless the file records the alignment's pixel size)")
    p.set_defaults(func=cmd_parse_pose_csparc)


def _add_parse_ctf_csparc(sub):
    p = _parse_parser(sub, "parse_ctf_csparc", "CTF parameters of a cryoSPARC .cs as a cryoDRGN "
                      "CTF pickle", "cryoSPARC particles .cs")
    p.add_argument("--png", type=Path, help="also plot the first particle's CTF to this PNG")
    p.add_argument("-D", type=int, help="box size in pixels, for a file without blob/shape")
    p.add_argument("--Apix", type=float, help="pixel size in Angstrom, for a file without "
                   "blob/psize_A")
    p.set_defaults(func=cmd_parse_ctf_csparc)


BACKPROJECT_EPILOG = """\
Outputs, by the form of -o:
  FOLDER    FOLDER/backproject.mrc, half_map_a.mrc, half_map_b.mrc, fsc-vals.txt, fsc-plot.png
            (cryoDRGN's names; the folder may exist, the files must not)
  MAP.mrc   MAP.mrc, MAP_half_a.mrc, MAP_half_b.mrc, MAP_fsc.txt, MAP_fsc.png beside it
Half-map A holds the particles at even positions (0, 2, ...) after --ind and --first, B the odd
ones. The FSC is between the unmasked half-maps (cryoDRGN's 'No Mask' curve, in shells of
rounded radius); the resolutions printed are where it crosses 0.5 and 0.143, interpolated
between shells. The voxel size comes from the CTF (rescaled to the stack's box), else --Apix,
else the stack header. Existing outputs are kept unless --overwrite."""


def _add_backproject_voxel(sub):
    p = sub.add_parser(
        "backproject-voxel", aliases=["backproject_voxel"],
        help="homogeneous reconstruction and half-map FSC: check poses and CTF before training",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reconstruct one map from all particles by regularized backprojection "
        "(cryoDRGN's backproject_voxel), plus half-maps of the even and odd particles and "
        "their FSC. If poses, CTF and translations are right, the map shows the consensus "
        "structure and the FSC reports a sensible resolution.", epilog=BACKPROJECT_EPILOG)
    p.add_argument("particles", help=".mrcs/.mrc stack, .star, .cs or .txt list of stacks")
    p.add_argument("--poses", required=True, help="pose .pkl, .star or .cs")
    p.add_argument("--ctf", help="CTF .pkl, .star or .cs (default: no CTF correction)")
    p.add_argument("-o", "--outdir", dest="out", required=True, type=Path, metavar="OUT",
                   help="output folder, or a .mrc file name (see below)")
    p.add_argument("--ind", help="index .pkl (or .txt) selecting particles")
    p.add_argument("--first", type=int, metavar="N",
                   help="use only the first N particles (after --ind)")
    p.add_argument("--datadir", help="folder that relative stack paths in .star/.cs resolve to")
    p.add_argument("--uninvert-data", dest="invert_data", action="store_false",
                   help="do not sign-invert the images")
    p.add_argument("--reg-weight", type=float, default=1.0,
                   help="add this times the mean weight to the weights (default 1.0)")
    p.add_argument("--ctf-alg", choices=["mul", "flip"], default="mul",
                   help="CTF correction: multiply by the CTF (default) or flip phases")
    p.add_argument("-b", "--batch-size", type=int, default=256,
                   help="images read and processed at a time (default 256)")
    p.add_argument("--no-half-maps", dest="half_maps", action="store_false",
                   help="only the full map: no half-maps, no FSC")
    p.add_argument("--Apix", type=float, help="pixel size in Angstrom, replacing the stack "
                   "header's (a CTF file's wins; they must agree within 1%%)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--lazy", action="store_true", help="accepted for cryoDRGN compatibility; "
                   "stacks are always read a batch at a time")
    p.set_defaults(func=cmd_backproject_voxel)


def _add_refine_z(sub):
    from .training.settings import default

    p = sub.add_parser(
        "refine-z", aliases=["refine_z"],
        help="refine each particle's latent through a trained run's decoder",
        description="Move each particle's z (an epoch's z.N.pkl, ours or cryoDRGN's) up its "
        "posterior under the epoch's decoder, at its pose and CTF (Levenberg-Marquardt): the "
        "encoder's z is kept in z.N.encoder.pkl, and z.N.pkl (and z.pkl when it is that "
        "epoch's copy) then hold the refined z, which every analysis reads. Training does this "
        "after its last epoch (--z-refine-steps); this command refines a run trained without "
        "it, stopped early, or an earlier epoch. Refining again starts from the encoder's z. "
        "Needs the particles, poses and CTF the run was trained on.")
    p.add_argument("workdir", type=Path, help="training folder")
    p.add_argument("--epoch", type=int, help="epoch to refine (default: the latest)")
    steps = default("z_refine_steps")
    p.add_argument("--steps", type=int, default=steps, help="Gauss-Newton "
                   f"(Levenberg-Marquardt) iterations per particle (default {steps}, as "
                   "training's --z-refine-steps)")
    p.add_argument("-b", "--batch-size", type=int, default=256,
                   help="images read and processed at a time (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="the decoder's precision in the iterations (default auto: bf16 where "
                   "the device has it, as in training)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_refine_z)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-cryodrgn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_train(sub)
    _add_eval_vol(sub)
    _add_analyze(sub)
    _add_demo(sub)
    _add_select(sub)
    _add_export(sub)
    _add_match(sub)
    _add_landscape(sub)
    _add_eval_images(sub)
    _add_refine_z(sub)
    _add_downsample(sub)
    _add_parse_pose_star(sub)
    _add_parse_ctf_star(sub)
    _add_parse_pose_csparc(sub)
    _add_parse_ctf_csparc(sub)
    _add_backproject_voxel(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args) or 0
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except PeerFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PEER
    except KeyboardInterrupt:
        print("interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130


# -- commands ---------------------------------------------------------------------------------
def cmd_simulate(args) -> int:
    from tqdm import tqdm

    from .simulate.dataset import SimConfig, write_dataset

    apix = args.apix if args.apix is not None else 192.0 / args.D
    cfg = SimConfig(n=args.n, D=args.D, apix=apix, snr=args.snr, junk=args.junk,
                    seed=args.seed)
    bar = tqdm(total=args.n, unit="img", desc="simulate")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    paths = write_dataset(args.outdir, cfg, progress=progress)
    bar.close()
    print(f"wrote {args.n} particles to {args.outdir}")
    for k, v in paths.items():
        print(f"  {k}: {v}")
    return 0


def cmd_train(args) -> int:
    from .training.api import train_from_args

    return train_from_args(args)


def cmd_eval_vol(args) -> int:
    import numpy as np

    from .analysis.volumes import eval_volumes

    z = args.z
    if args.z_start is not None:
        if args.z_end is None or len(args.z_end) != len(args.z_start):
            raise InputError("--z-start needs --z-end with as many values")
        if args.n < 1:
            raise InputError(f"-n {args.n}: expected at least 1 map")
        z = np.linspace(args.z_start, args.z_end, args.n, dtype=np.float32)
    elif args.z_end is not None:
        raise InputError("--z-end needs --z-start")
    paths = eval_volumes(args.workdir, epoch=args.epoch, z=z, zfile=args.zfile,
                         out=args.out, apix=args.Apix, device=args.device,
                         precision=args.precision, config=args.config, prefix=args.prefix,
                         start_index=args.vol_start_index, flip=args.flip, invert=args.invert)
    print(f"wrote {len(paths)} map(s): {paths[0]}" + (" ..." if len(paths) > 1 else ""))
    return 0


def cmd_analyze(args) -> int:
    from .analysis.analyze import run_analysis

    events = run_analysis(args.workdir, epoch=args.epoch, ksample=args.ksample, pcs=args.pc,
                          outdir=args.outdir, overwrite=args.overwrite, n_per_pc=args.n_per_pc,
                          anchors=args.anchors, max_neighbors=args.max_neighbors,
                          avg_neighbors=args.avg_neighbors, skip_umap=args.skip_umap,
                          skip_vol=args.skip_vol, device=args.device,
                          precision=args.precision, apix=args.Apix, seed=args.seed)
    _print_steps(events)
    return 0


def _print_steps(events) -> None:
    """Print an analysis's progress events: its steps, start and end, and warnings."""
    for ev in events:
        if ev.kind == "step":
            print(f"[{ev.done}/{ev.total}] {ev.message}", flush=True)
        elif ev.kind in ("start", "done"):
            print(ev.message, flush=True)
        elif ev.kind == "warning":
            print(f"warning: {ev.message}", file=sys.stderr, flush=True)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.outdir, n=args.n, D=args.D, epochs=args.epochs, snr=args.snr,
             overwrite=args.overwrite, explore=not args.skip_explore)
    return 0


def cmd_select(args) -> int:
    from .analysis.filtering import save_selected, select_particles

    res = select_particles(args.workdir, epoch=args.epoch, kmeans=args.kmeans,
                           kmeans_labels=args.kmeans_labels, polygon=args.polygon,
                           space=args.space, invert=args.invert, saved=args.saved,
                           ind=args.ind, kmeans_seed=args.kmeans_seed,
                           kmeans_from=args.kmeans_from)
    for note in res.notes:
        print(note)
    path, inv = save_selected(res, args.out, overwrite=args.overwrite)
    print(f"selected {res.count} of {res.n} particles ({res.count / res.n:.1%}) -> {path}; "
          f"the other {res.n - res.count} -> {inv}")
    return 0


def cmd_landscape(args) -> int:
    from .analysis.landscape import run_landscape, subset_rows
    from .io.runfolder import RunFolder

    if args.epoch is not None and args.epoch_pos is not None and args.epoch != args.epoch_pos:
        raise InputError(f"two epochs given ({args.epoch_pos} and --epoch {args.epoch})")
    epoch = args.epoch if args.epoch is not None else args.epoch_pos
    rows = None if args.ind is None else subset_rows(RunFolder.open(args.workdir), args.ind)
    events = run_landscape(args.workdir, epoch=epoch, outdir=args.outdir,
                           overwrite=args.overwrite, particles=rows, sketch=args.sketch,
                           downsample=args.downsample, mask=args.mask, thresh=args.thresh,
                           dilate=args.dilate, pc_dim=args.pc_dim, clusters=args.clusters,
                           linkage=args.linkage, skip_umap=args.skip_umap, device=args.device,
                           precision=args.precision, apix=args.Apix, seed=args.seed)
    _print_steps(events)
    return 0


def cmd_match(args) -> int:
    import numpy as np

    from .analysis.match import load_references, match_references, write_match
    from .session import Session

    s = Session.open(args.workdir, args.epoch, autosave=False)
    if args.kmeans < 2:
        raise InputError("--kmeans needs at least 2 centres")
    refs = load_references(args.refs, s, args.ref_apix)
    res = match_references(s, refs, k=args.kmeans, resolution=args.lowpass)
    out = args.outdir or s.folder.analysis_dir(s.epoch, "match")
    written = write_match(res, out, overwrite=args.overwrite)
    counts = res.counts()
    for i, r in enumerate(res.refs):
        order = np.argsort(-res.corr[i])
        best = ", ".join(f"cluster {c} (r={res.corr[i, c]:.3f}, {counts[c]} particles)"
                         for c in order[:3])
        print(f"{r}: best {best}")
    print(f"wrote {written['table']} and {len(res.refs)} per-particle colouring file(s) in {out}")
    return 0


def cmd_export(args) -> int:
    from .analysis.filtering import export_subsets

    done = export_subsets(args.ind, workdir=args.workdir, star=args.star, cs=args.cs,
                          mrcs=args.mrcs, source=args.source, particles=args.particles,
                          datadir=args.datadir, apix=args.Apix, overwrite=args.overwrite)
    for e in done:
        print(f"wrote {e.count} particles to {e.path} (from {e.source})")
    return 0



def _eval_images_form(args) -> dict:
    """The run, the particles and the outputs of either eval_images form (see --help)."""
    reasons = [r for r, hit in ((f"the .pkl {args.second}", args.second.lower().endswith(".pkl")),
                                ("--out-z", args.out_z is not None),
                                ("-c", args.config is not None)) if hit]
    forms = ("use `eval-images RUN PARTICLES --poses P -o Z.pkl` or cryoDRGN's `eval_images "
             "PARTICLES WEIGHTS.pkl -c config.yaml -o LOSSES.pkl --out-z Z.pkl --poses P`")
    if reasons:
        if Path(args.first).is_dir():
            raise InputError(f"{args.first} is a folder, but {' and '.join(reasons)} make this "
                             f"cryoDRGN's form PARTICLES WEIGHTS; {forms}")
        if args.out_z is None:
            raise InputError(f"cryoDRGN's form (PARTICLES WEIGHTS) needs --out-z Z.pkl; {forms}")
        for flag, value in (("--losses", args.losses), ("--epoch", args.epoch)):
            if value is not None:
                raise InputError(f"{flag} belongs to the RUN PARTICLES form (in cryoDRGN's form "
                                 "-o is the losses pickle and the weights file the epoch)")
        return dict(particles=args.first, run=dict(weights=args.second, config=args.config),
                    z=args.out_z, losses=args.out)
    if not Path(args.first).is_dir():
        raise InputError(f"{args.first}: not a training folder; {forms}")
    return dict(particles=args.second, run=dict(workdir=args.first, epoch=args.epoch),
                z=args.out, losses=args.losses)


def cmd_eval_images(args) -> int:
    from tqdm import tqdm

    from .analysis.eval_images import check_output, eval_images, save_losses, save_z

    form = _eval_images_form(args)
    z_out, l_out = form["z"], form["losses"]
    if l_out is not None and Path(l_out).resolve() == Path(z_out).resolve():
        raise InputError(f"{z_out}: the z and losses outputs must be different files")
    check_output(z_out, args.overwrite, "output")
    if l_out is not None:
        check_output(l_out, args.overwrite, "output")
    bars = []  # the bar starts with the first batch, after any warning about the inputs

    def progress(done, total):
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="eval_images"))
        bars[0].update(done - bars[0].n)

    try:
        res = eval_images(form["particles"], args.poses, args.ctf, **form["run"], ind=args.ind,
                          datadir=args.datadir, batch_size=args.batch_size, device=args.device,
                          beta=args.beta, invert_data=args.invert_data, window=args.window,
                          window_r=args.window_r, progress=None if args.quiet else progress)
    finally:
        for bar in bars:
            bar.close()
    save_z(z_out, res)
    if l_out is not None:
        save_losses(l_out, res)
    m = res.summary()
    print(f"{res.n} particles through {res.weights}: mean loss {m['loss']:.6f} "
          f"(reconstruction {m['recon']:.6f}, KLD {m['kld']:.6f}, beta {res.beta:.4g})")
    print(f"wrote z_mu, z_logvar to {z_out}" + (f"; losses to {l_out}" if l_out else ""))
    return 0


def cmd_refine_z(args) -> int:
    from tqdm import tqdm

    from .training.refine_z import refine_run

    bars = []

    def progress(done, total):
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="refine_z"))
        bars[0].update(done - bars[0].n)

    t0 = time.perf_counter()
    try:
        zfile, encfile, how = refine_run(args.workdir, args.epoch, args.steps, args.device,
                                         args.batch_size, None if args.quiet else progress,
                                         args.precision)
    finally:
        for bar in bars:
            bar.close()
    print(f"refined latents ({how}) in {time.perf_counter() - t0:.1f} s: {zfile} (the "
          f"encoder's: {encfile.name})")
    return 0


def _apix_text(apix, unit=" A") -> str:
    if apix is None:
        return "unknown"
    return "mixed" if apix != apix else f"{apix:g}{unit}"


def cmd_downsample(args) -> int:
    import os

    from tqdm import tqdm

    from .io.downsample import downsample_stack, downsample_volume

    if args.is_vol:
        for flag, value in (("--chunk", args.chunk), ("--ind", args.ind),
                            ("--datadir", args.datadir), ("--outdir", args.outdir)):
            if value is not None:
                raise InputError(f"{flag} does not apply to a map (--is-vol); drop it.")
        res = downsample_volume(args.input, args.outfile, args.D, apix=args.Apix,
                                overwrite=args.overwrite)
        print(f"wrote {res.out}: {res.D}^3 voxels (from {res.D_orig}^3), voxel size "
              f"{_apix_text(res.apix)}")
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = args.max_threads or min(16, cores or 1)
    if workers < 1:
        raise InputError(f"--max-threads {args.max_threads}: give at least 1.")
    bars = []  # made at the first batch, so that errors before it print one line only

    def progress(done, total):
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="downsample", disable=args.quiet))
        bars[0].update(done - bars[0].n)

    try:
        res = downsample_stack(args.input, args.outfile, args.D, datadir=args.datadir,
                               ind=args.ind, chunk=args.chunk, batch_size=args.batch_size,
                               apix=args.Apix, outdir=args.outdir, overwrite=args.overwrite,
                               workers=workers, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    where = str(res.out)
    if res.stacks != [res.out]:
        where = f"{len(res.stacks)} stack(s) listed in {res.out}"
    print(f"wrote {res.n} images of {res.D} x {res.D} pixels (from {res.D_orig}), pixel size "
          f"{_apix_text(res.apix)}, to {where}")
    return 0


def _check_new(paths, overwrite: bool) -> None:
    for p in paths:
        if p is not None and Path(p).exists() and not overwrite:
            raise InputError(f"{p} already exists; pass --overwrite to replace it or choose "
                             "another name.")


def _parsed_line(name: str, res, out: Path) -> str:
    return (f"{name}: {res.n} particles, box {_apix_text(res.box, ' px')}, pixel size "
            f"{_apix_text(res.apix)} -> {out}")


def _write_ctf(name: str, res, args) -> int:
    from .io.ctf import save_ctf

    save_ctf(args.out, res.ctf)
    print(_parsed_line(name, res, args.out))
    if args.png is not None:
        from .analysis.ctf_plot import plot_ctf

        plot_ctf(res.ctf[0], args.png)
        print(f"plotted the first particle's CTF -> {args.png}")
    return 0


def cmd_parse_pose_star(args) -> int:
    from .io.parse import parse_pose_star
    from .io.poses import save_poses

    _check_new([args.out], args.overwrite)
    res = parse_pose_star(args.input, D=args.D, apix=args.Apix)
    save_poses(args.out, res.rot, res.trans)
    print(_parsed_line("parse_pose_star", res, args.out))
    return 0


def cmd_parse_ctf_star(args) -> int:
    from .io.parse import parse_ctf_star

    _check_new([args.out, args.png], args.overwrite)
    res = parse_ctf_star(args.input, D=args.D, apix=args.Apix, kv=args.kv, cs=args.cs,
                         w=args.w, ps=args.ps)
    return _write_ctf("parse_ctf_star", res, args)


def cmd_parse_pose_csparc(args) -> int:
    from .io.parse import parse_pose_csparc
    from .io.poses import save_poses

    _check_new([args.out], args.overwrite)
    res = parse_pose_csparc(args.input, D=args.D, abinit=args.abinit, hetrefine=args.hetrefine)
    save_poses(args.out, res.rot, res.trans)
    print(_parsed_line("parse_pose_csparc", res, args.out))
    return 0


def cmd_parse_ctf_csparc(args) -> int:
    from .io.parse import parse_ctf_csparc

    _check_new([args.out, args.png], args.overwrite)
    res = parse_ctf_csparc(args.input, D=args.D, apix=args.Apix)
    return _write_ctf("parse_ctf_csparc", res, args)


def cmd_backproject_voxel(args) -> int:
    from tqdm import tqdm

    from .analysis.backproject import resolution_text, run_backproject
    from .training.trainer import pick_device

    bars = []  # made at the first batch, so that input errors print alone

    def progress(done, total):
        if not bars:
            bars.append(tqdm(total=total, unit="img", desc="backproject"))
        bars[0].update(done - bars[0].n)

    try:
        rec, written = run_backproject(
            args.particles, args.poses, args.out, args.ctf, overwrite=args.overwrite,
            half_maps=args.half_maps, ind=args.ind, first=args.first, datadir=args.datadir,
            apix=args.Apix, batch_size=args.batch_size, reg_weight=args.reg_weight,
            ctf_alg=args.ctf_alg, invert=args.invert_data, device=pick_device(args.device),
            progress=None if args.quiet else progress)
    finally:
        for bar in bars:
            bar.close()
    ctf = (f"CTF correction: {args.ctf_alg}" if rec.ctf else
           "no CTF correction (no --ctf given)")
    print(f"backprojected {rec.n} particles, box {rec.volume.shape[0]}, "
          f"{rec.apix:g} A/pixel; {ctf}")
    if rec.fsc is not None:
        print(f"half-map FSC (unmasked, {rec.n_half[0]} + {rec.n_half[1]} particles): "
              f"0.5 at {resolution_text(rec, 0.5)}, 0.143 at {resolution_text(rec, 0.143)}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0



if __name__ == "__main__":
    sys.exit(main())
