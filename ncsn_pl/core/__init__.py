"""The mathematics of NCSN as plain PyTorch (no Lightning, no config, no logging): noise schedules and NCSNv2's
rules, the denoising score matching loss, the samplers (annealed Langevin, consistent annealed, predictor-corrector,
probability-flow ODE) and the score-function conventions they take, per-sample seeding, exact Gaussian-mixture
scores, and the moving average of the weights."""
