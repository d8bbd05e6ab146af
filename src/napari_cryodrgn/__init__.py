"""napari-cryodrgn: heterogeneous cryo-EM reconstruction (cryoDRGN-style VAE) and a napari explorer.

The core (everything outside ``_napari``) imports neither Qt nor napari.
"""

__version__ = "0.1.0"
