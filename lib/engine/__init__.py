"""Training and evaluation engine: optimiser and schedule, checkpoints, DDP helpers, the
training loop (:mod:`lib.engine.trainer`), the tester and the training tasks."""
