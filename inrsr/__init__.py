"""inrsr: MRI super-resolution and accelerated reconstruction with implicit neural representations."""

__version__ = "0.1.0"

__all__ = ["__version__"]
