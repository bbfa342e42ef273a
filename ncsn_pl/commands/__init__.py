"""The command line: LightningCLI (fit, validate, test), the ``sample``, ``fid`` and ``fid_nfe`` commands (their sample
sets: :mod:`ncsn_pl.sample_sets`), the checkpoints they read, official ones included, and their conversion."""
