"""Per-epoch losses from a training folder's run.log (ours or cryoDRGN's)."""

from __future__ import annotations

import re
from pathlib import Path

# ours:      "2026-01-01 10:00:00 epoch 3/12: loss 0.602088 gen 0.601479 kld 15.6 (...)"
# cryoDRGN:  "# =====> Epoch: 3 Average gen loss = 0.6015, KLD = 15.6, total loss = 0.6021; ..."
_OURS = re.compile(r"\bepoch (\d+)/\d+: loss ([-+0-9.eEnaif]+)")
_CRYODRGN = re.compile(r"=+> Epoch: (\d+) .*?total loss = ([-+0-9.eEnaif]+)")


def read_losses(path) -> dict[int, float]:
    """{epoch: mean training loss} from a run.log; a resumed run's later lines win. Empty when
    the file is missing or records no epochs."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return {}
    out: dict[int, float] = {}
    for line in text.splitlines():
        m = _OURS.search(line) or _CRYODRGN.search(line)
        if m:
            try:
                out[int(m.group(1))] = float(m.group(2).rstrip(".,;"))
            except ValueError:
                continue
    return dict(sorted(out.items()))
