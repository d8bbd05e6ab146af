import json

from napari_cryodrgn.cli import main
from napari_cryodrgn.io.mrc import read_mrc


def test_demo_runs_end_to_end_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "-n", "200", "-D", "16", "--epochs", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("r2", "state_acc", "junk_auc", "fsc_auc"):
        assert key in summary
    vol, apix = read_mrc(out / "maps" / "state0_conf00.mrc")
    assert vol.shape == (16, 16, 16) and apix == 12.0
    assert (out / "train" / "weights.1.pkl").exists()
    assert "conformation R^2" in capsys.readouterr().out
    ana = out / "train" / "analyze.1"
    assert summary["analysis"] == str(ana)
    for f in ("umap.pkl", "pc1/vol_010.mrc", "pc1/z_values.txt", "kmeans20/labels.pkl"):
        assert (ana / f).exists(), f
    assert list(ana.glob("*.png"))
    # a second run reuses the data and refuses to overwrite the run without --overwrite
    assert main(["demo", str(out), "-n", "200", "-D", "16", "--epochs", "1"]) == 2
