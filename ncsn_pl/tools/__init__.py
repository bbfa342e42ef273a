"""Tools on top of training runs: noise-schedule sweeps, run comparison, reading runs back."""
