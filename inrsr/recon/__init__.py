"""Reconstruction of undersampled cardiac cine k-space with implicit neural representations (``inrsr recon``).

Modules: ``masks`` (sampling masks), ``coils`` (ESPIRiT), ``model`` (image and coil fields), ``solver`` (the
fit of one slice), ``scoring`` (CMRxRecon 2023 metrics), ``api`` (files in, images and a report out),
``output``.
"""
