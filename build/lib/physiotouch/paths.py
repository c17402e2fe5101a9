"""Where the package's own files live, and where a run's files go.

The Hydra config tree ships inside the package (`physiotouch/conf/`), so that a wheel installed anywhere composes
the same configs as a source checkout. Runs are written under the project root: the checkout itself when physiotouch
runs from one, else the current folder (an installed package has no project of its own).
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"
_CHECKOUT = PACKAGE_DIR.parent
IN_CHECKOUT = (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "physiotouch").resolve() == PACKAGE_DIR


def project_root() -> Path:
    """The source checkout, or (an installed package) the folder the command runs in."""
    return _CHECKOUT if IN_CHECKOUT else Path.cwd()


REPO_DIR = project_root()  # finalize's docs root and git state: the checkout (or the current folder)
