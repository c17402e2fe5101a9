"""Hyper-parameter searches: physiotouch's own Optuna sweeper (sweeper.py), its params grammar, storage, pruning,
narrowing and search report."""
