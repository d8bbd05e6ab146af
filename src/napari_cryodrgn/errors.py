"""User-facing errors: a clear message that names the file and the problem."""


class InputError(ValueError):
    """Bad user input (a file, a flag, a folder). The message is shown as is, without traceback."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class PeerFailed(RuntimeError):
    """Another process of a distributed run (torchrun) failed or vanished; this one stops."""
