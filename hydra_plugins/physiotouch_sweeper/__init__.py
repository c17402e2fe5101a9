"""Hydra loads sweepers only from classes defined in the `hydra_plugins` namespace (it registers a plugin under its
class's own module name): this subclass puts physiotouch's Optuna sweeper there. The code lives in
`physiotouch.experiments.optuna_sweeper`."""

from physiotouch.experiments.optuna_sweeper import PhysiotouchOptunaSweeper as _Sweeper


class PhysiotouchOptunaSweeper(_Sweeper):
    pass
