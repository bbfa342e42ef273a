"""The command line: LightningCLI (fit, validate, test) and the ``sample`` and ``fid`` jobs."""
