"""All file I/O lives in this package: NIfTI, k-space ``.mat`` files and checkpoints."""
