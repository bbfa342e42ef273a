"""ncsn-pl: noise conditional score networks (NCSN, NCSNv2) in PyTorch Lightning: train them, draw and score samples
(FID, KID, IS), sweep their settings and compare the runs.

``python -m ncsn_pl COMMAND --help`` lists a command's options.
"""
