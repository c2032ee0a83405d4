"""The package version, and the ``--version`` option every console script shares.

The version is the installed distribution's (``importlib.metadata``: what ``pyproject.toml`` said when
``pip install`` ran); a source tree used without installing reports ``gan_core.__version__`` and says so.
"""

from __future__ import annotations

import argparse
from importlib import metadata

__all__ = ["DISTRIBUTION", "add_version_argument", "package_version"]

DISTRIBUTION = "san-gan"


def package_version() -> str:
    """``"0.1.0"`` (the installed distribution's version), else ``"<gan_core.__version__> (not installed)"``."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from . import __version__

        return f"{__version__} (not installed)"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``<prog> <version>`` (e.g. ``sr-infer 0.1.0``) and exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the san-gan version and exit")  # fmt: skip
