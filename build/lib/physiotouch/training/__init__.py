"""Training: the LightningModule (module.py), the loss-weight schemes (schemes.py) and balancers (balancing.py), the
epoch bookkeeping (epoch_stats.py), the optimiser and schedule (optim.py), loggers, callbacks and health rules."""
