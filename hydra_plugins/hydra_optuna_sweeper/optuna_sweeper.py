"""The plugin's class name, for configs that name it; see the package docstring."""

from physiotouch.search.sweeper import PhysiotouchOptunaSweeper as _Sweeper


class OptunaSweeper(_Sweeper):
    pass
