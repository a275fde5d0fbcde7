"""The encoder-decoder mode (ArSSR-style): one low-res volume -> any scale, without per-subject fitting.

``config`` (settings, intensity normalisation), ``encoders`` and ``model`` (the network), ``degrade`` and ``data``
(training pairs through the shared slice PSF), ``train`` (the loop, DDP under torchrun), ``infer`` (tiling).
Import the submodules; this package imports nothing heavy.
"""

DEFAULT_WEIGHTS = "arssr_default.pt"


def default_weights_path():
    """Path of the pretrained weights shipped in the package (``inrsr/weights/arssr_default.pt``)."""
    from importlib.resources import files

    return files("inrsr").joinpath("weights", DEFAULT_WEIGHTS)
