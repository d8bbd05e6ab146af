"""Command line: ``napari-cryodrgn simulate | train | eval-vol | analyze | demo``.

Each subcommand is a thin face over library functions; user errors print one line and exit 2.
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
    p = sub.add_parser("train", help="train the heterogeneity VAE (cryoDRGN train_vae flags)")
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
    p = sub.add_parser("eval-vol", help="decode maps at latent points of a trained run")
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
    p = sub.add_parser("demo", help="simulate a dataset, train on it and score the result")
    p.add_argument("outdir", type=Path, nargs="?", default=Path("demo_run"))
    p.add_argument("-n", type=int, default=8000)
    p.add_argument("-D", type=int, default=32)
    p.add_argument("--snr", type=float, default=3.0)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-cryodrgn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_train(sub)
    _add_eval_vol(sub)
    _add_analyze(sub)
    _add_demo(sub)
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
             overwrite=args.overwrite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
