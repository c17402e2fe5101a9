"""Hydra loads sweepers only from classes defined in the `hydra_plugins` namespace (it registers a plugin under its
class's own module name): this subclass puts physiotouch's Optuna sweeper there. The code lives in
`physiotouch.search.sweeper`."""

from physiotouch.search.sweeper import PhysiotouchOptunaSweeper as _Sweeper


class PhysiotouchOptunaSweeper(_Sweeper):
    pass
