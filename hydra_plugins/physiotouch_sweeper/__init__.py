"""Hydra loads sweepers only from classes defined in the `hydra_plugins` namespace (it registers a plugin under its
class's own module name): this subclass puts physiotouch's Optuna sweeper there. The code lives in
`physiotouch.search.sweeper`."""

# The module, not its class: Hydra's scan registers every plugin class it finds in this module's namespace, and the
# base class held here would be listed a second time.
from physiotouch.search import sweeper as _implementation


class PhysiotouchOptunaSweeper(_implementation.PhysiotouchOptunaSweeper):
    pass
