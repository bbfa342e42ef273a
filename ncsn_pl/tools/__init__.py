"""Tools on top of training runs: noise-schedule sweeps and run comparison (reading runs back: :mod:`ncsn_pl.runs`)."""
