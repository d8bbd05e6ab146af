"""The configurations the interop group trains, and the settings of its cryoDRGN commands."""

import numpy as np

N_SELECT = 96  # particles kept by the index pickle that runs trained with --ind use

# Both directions cover every positional encoding once, each domain and encoder three times,
# and a spread of widths, depths and zdims (1 to 8). ``geom_nohighf`` (theirs) and
# ``geom_full`` (ours) make the decoder's and encoder's first layers residual (input width ==
# hidden width), a case cryoDRGN's checkpoints name differently (``main.0.linear.*``).
THEIR_RUNS = {
    "gaussian-fourier-resid": dict(pe_type="gaussian", domain="fourier", encode_mode="resid",
                                   qdim=32, qlayers=2, pdim=32, players=2, zdim=2, epochs=2),
    "geom_lowf-hartley-mlp": dict(pe_type="geom_lowf", domain="hartley", encode_mode="mlp",
                                  qdim=24, qlayers=1, pdim=40, players=2, zdim=3,
                                  activation="leaky_relu", extra=["--no-window"]),
    "geom_ft-fourier-mlp": dict(pe_type="geom_ft", domain="fourier", encode_mode="mlp",
                                qdim=48, qlayers=3, pdim=24, players=1, zdim=4, enc_mask=6,
                                ind=True),
    "geom_full-hartley-resid": dict(pe_type="geom_full", domain="hartley", encode_mode="resid",
                                    qdim=32, qlayers=1, pdim=32, players=3, zdim=1, enc_mask=-1),
    "geom_nohighf-fourier-resid": dict(pe_type="geom_nohighf", pe_dim=4, domain="fourier",
                                       encode_mode="resid", qdim=80, qlayers=1, pdim=32,
                                       players=2, zdim=8, enc_mask=5),
    "linear_lowf-hartley-mlp": dict(pe_type="linear_lowf", domain="hartley", encode_mode="mlp",
                                    qdim=16, qlayers=2, pdim=64, players=1, zdim=2,
                                    extra=["--uninvert-data"]),
}

OUR_RUNS = {
    "gaussian-fourier-resid": dict(pe_type="gaussian", domain="fourier", encode_mode="resid",
                                   qdim=32, qlayers=2, pdim=32, players=2, zdim=3, epochs=2,
                                   ind=True, inputs="star"),
    "geom_lowf-fourier-mlp": dict(pe_type="geom_lowf", pe_dim=5, domain="fourier",
                                  encode_mode="mlp", qdim=24, qlayers=1, pdim=40, players=2,
                                  zdim=2, activation="leaky_relu"),
    "geom_ft-hartley-resid": dict(pe_type="geom_ft", domain="hartley", encode_mode="resid",
                                  qdim=48, qlayers=2, pdim=24, players=1, zdim=4, enc_mask=6),
    "geom_full-fourier-resid": dict(pe_type="geom_full", pe_dim=4, domain="fourier",
                                    encode_mode="resid", qdim=80, qlayers=1, pdim=32, players=2,
                                    zdim=8, enc_mask=5),
    "geom_nohighf-hartley-mlp": dict(pe_type="geom_nohighf", domain="hartley",
                                     encode_mode="mlp", qdim=16, qlayers=1, pdim=48, players=3,
                                     zdim=2),
    "linear_lowf-hartley-resid": dict(pe_type="linear_lowf", domain="hartley",
                                      encode_mode="resid", qdim=32, qlayers=2, pdim=32,
                                      players=1, zdim=1, enc_mask=-1),
}

ANALYZE_THEIRS = "gaussian-fourier-resid"  # cryodrgn analyze on their run (no UMAP: zdim 2)
# cryodrgn analyze on our runs: with UMAP (needed by filter) on the run trained from a .star
# (particles, poses and CTF) with --ind, and --skip-umap on one trained from pickles
ANALYZE_OURS = {"gaussian-fourier-resid": [], "geom_lowf-fourier-mlp": ["--skip-umap"]}
FILTER_OURS = "gaussian-fourier-resid"
CHILD_RUN = "child-of-gaussian-fourier-resid"  # train_on_selection on FILTER_OURS, 1 epoch
ANALYZE_ARGS = ["--pc", "2", "--n-per-pc", "3", "--ksample", "4"]
FILTER_PRESELECT = np.array([0, 3, 10, 50, 95])  # rows of z.N.pkl that filter will save
