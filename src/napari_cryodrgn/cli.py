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
from pathlib import Path

from .errors import InputError, TrainingDiverged

EXIT_INPUT, EXIT_DIVERGED = 2, 3


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
    p = sub.add_parser("train", aliases=["train_vae"],
                       help="train the heterogeneity VAE (cryoDRGN train_vae flags)")
    p.add_argument("particles", help=".mrcs/.mrc stack, .star, .cs or .txt list of stacks")
    p.add_argument("--poses", required=True, help="pose .pkl, .star or .cs")
    p.add_argument("--ctf", help="CTF .pkl, .star or .cs")
    p.add_argument("-o", "--outdir", required=True, type=Path)
    p.add_argument("--zdim", type=int, required=True, help="latent dimension (8 is typical)")
    p.add_argument("-n", "--num-epochs", type=int, default=20)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--wd", type=float, default=0.0, help="weight decay")
    p.add_argument("--beta", type=float, help="KL weight (default 1/zdim)")
    p.add_argument("--enc-dim", dest="qdim", type=int, default=1024)
    p.add_argument("--enc-layers", dest="qlayers", type=int, default=3)
    p.add_argument("--dec-dim", dest="pdim", type=int, default=1024)
    p.add_argument("--dec-layers", dest="players", type=int, default=3)
    p.add_argument("--encode-mode", choices=["resid", "mlp"], default="resid")
    p.add_argument("--enc-mask", type=int, help="encoder mask radius (default D/2; -1 none)")
    p.add_argument("--enc-input", choices=["image", "residual"], default="image",
                   help="encoder input: the image (cryoDRGN) or its difference from the "
                   "model's projection at z = 0")
    p.add_argument("--no-enc-inplane", dest="enc_inplane", action="store_false",
                   help="feed the encoder images as they are (cryoDRGN) instead of turned to a "
                   "canonical in-plane angle using the known pose")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="per-batch gradient steps on each latent through the decoder")
    p.add_argument("--refine-step", type=float, default=0.5, help="latent step length")
    p.add_argument("--pe-type", default="gaussian",
                   choices=["gaussian", "geom_lowf", "geom_ft", "geom_full", "geom_nohighf",
                            "linear_lowf"])
    p.add_argument("--pe-dim", type=int, help="frequencies per axis (default D/2)")
    p.add_argument("--feat-sigma", type=float, default=0.5)
    p.add_argument("--domain", choices=["fourier", "hartley"], default="fourier")
    p.add_argument("--activation", choices=["relu", "leaky_relu"], default="relu")
    p.add_argument("--ind", help="index .pkl selecting particles")
    p.add_argument("--datadir", help="folder that relative stack paths in .star/.cs resolve to")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", help="weights.N.pkl to resume from, or 'latest'")
    p.add_argument("--checkpoint", type=int, default=1, help="save every N epochs")
    p.add_argument("--uninvert-data", dest="invert_data", action="store_false",
                   help="do not sign-invert the images")
    p.add_argument("--no-window", dest="window", action="store_false")
    p.add_argument("--window-r", type=float, default=0.85)
    p.add_argument("--Apix", type=float, help="pixel size check/override in Angstrom")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--lazy", action="store_true", help="accepted for cryoDRGN compatibility; "
                   "stacks are always memory-mapped")
    p.add_argument("--overwrite", action="store_true",
                   help="allow writing into a folder that already holds a run")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_eval_vol(sub):
    p = sub.add_parser("eval-vol", aliases=["eval_vol"],
                       help="decode maps at latent points of a trained run")
    p.add_argument("workdir", type=Path)
    p.add_argument("--epoch", type=int, help="epoch to use (default: the latest)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-z", type=float, nargs="+", help="one latent point (zdim values)")
    g.add_argument("--zfile", type=Path, help="text file with one latent point per row")
    p.add_argument("-o", "--out", required=True, type=Path,
                   help="output folder (vol_001.mrc ...), or a .mrc file for one point")
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
                   help="number of k-means clusters (default 20; the labels of "
                   "analyze.N/kmeansK/ when that exists, else computed)")
    p.add_argument("--kmeans-labels", type=int, nargs="+", metavar="L",
                   help="k-means clusters to select (0-based)")
    p.add_argument("--polygon", type=Path, metavar="FILE", help="lasso polygon file (x y per "
                   "line)")
    p.add_argument("--space", default="umap",
                   help="view the polygon was drawn on: umap (default), pca (PC1/PC2), "
                   "pca:i,j or z:i,j (0-based dimensions)")
    p.add_argument("--saved", action="store_true",
                   help="add the explorer's saved selection (WORKDIR/explore/selection.npy)")
    p.add_argument("--invert", action="store_true", help="keep the particles not selected")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="IND.pkl",
                   help="index pickle to write (IND_inverse.pkl is written beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing index files")
    p.set_defaults(func=cmd_select)


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
    from .analysis.volumes import eval_volumes

    paths = eval_volumes(args.workdir, epoch=args.epoch, z=args.z, zfile=args.zfile,
                         out=args.out, apix=args.Apix, device=args.device,
                         precision=args.precision)
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
    for ev in events:
        if ev.kind == "step":
            print(f"[{ev.done}/{ev.total}] {ev.message}", flush=True)
        elif ev.kind in ("start", "done"):
            print(ev.message, flush=True)
        elif ev.kind == "warning":
            print(f"warning: {ev.message}", file=sys.stderr, flush=True)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.outdir, n=args.n, D=args.D, epochs=args.epochs, snr=args.snr,
             overwrite=args.overwrite, explore=not args.skip_explore)
    return 0


def cmd_select(args) -> int:
    from .analysis.filtering import save_selected, select_particles

    res = select_particles(args.workdir, epoch=args.epoch, kmeans=args.kmeans,
                           kmeans_labels=args.kmeans_labels, polygon=args.polygon,
                           space=args.space, invert=args.invert, saved=args.saved)
    for note in res.notes:
        print(note)
    path, inv = save_selected(res, args.out, overwrite=args.overwrite)
    print(f"selected {res.count} of {res.n} particles ({res.count / res.n:.1%}) -> {path}; "
          f"the other {res.n - res.count} -> {inv}")
    return 0


def cmd_export(args) -> int:
    from .analysis.filtering import export_subsets

    done = export_subsets(args.ind, workdir=args.workdir, star=args.star, cs=args.cs,
                          mrcs=args.mrcs, source=args.source, particles=args.particles,
                          datadir=args.datadir, apix=args.Apix, overwrite=args.overwrite)
    for e in done:
        print(f"wrote {e.count} particles to {e.path} (from {e.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
