"""The run records: what a run writes about itself and how it is read back. One ``version_N/`` folder per run
(:mod:`.logger`, :mod:`.folder`), how it ended and which value of a metric is the best (:mod:`.records`), one record
per evaluation (:mod:`.step_records`), what it tells Weights & Biases (:mod:`.wandb_glue`), and reading runs back
without a server (:mod:`.reading`, :mod:`.status`).

Nothing is imported here, so the tools that read runs back start without Lightning; configs name the logger
``ncsn_pl.training.RunLogger``, with the other Lightning components."""
