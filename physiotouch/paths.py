"""Where the package's own files live (the Hydra config tree sits beside the package, as in
lightning-hydra-template)."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
CONF_DIR = REPO_DIR / "conf"
