"""Optional dependencies ("extras") and the one-line message a user sees when one is missing.

The default install (``pip install san-gan``) upscales (our models, and community models through
spandrel), trains and evaluates PSNR / SSIM with torch, torchvision, Pillow, numpy, safetensors, spandrel,
PyYAML and tqdm only. Features that need more name the extra that brings it:

- ``metrics`` (pyiqa, lpips, matplotlib): NIQE (pyiqa with the LIVE parameters), LPIPS (lpips), the
  FID Inception blocks (pyiqa), ``sr-eval``'s perception-distortion plot (matplotlib);
- ``tb`` (tensorboard): ``log.tensorboard=true`` in the training tools;
- ``train``: ``metrics`` and ``tb``, everything the training tools can log (NIQE, periodic FID, TensorBoard);
- ``test``: ``metrics`` plus pytest, ruff and scipy, for ``make test``.

Batch tools turn a missing optional metric into a note (``NIQE skipped: pip install 'san-gan[metrics]'``)
and go on; a feature a command cannot do without (FID in ``translate-eval``) is one error line.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["MissingExtraError", "has_module", "import_extra"]


class MissingExtraError(ImportError, RuntimeError):
    """A feature's optional package is not installed. ``str(e)``: one line naming the extra to install.

    Also a RuntimeError, so the CLIs' one-line handlers for run-time errors report it without a traceback.
    """

    def __init__(self, feature: str, module: str, extra: str = "metrics") -> None:
        self.feature, self.module, self.extra = feature, module, extra
        super().__init__(f"{feature} needs {module}, which is not installed: pip install 'san-gan[{extra}]'")

    @property
    def skipped(self) -> str:
        """The note a batch tool prints when it goes on without the feature."""
        return f"{self.feature} skipped: pip install 'san-gan[{self.extra}]'"


def has_module(name: str) -> bool:
    """True when ``name`` (top-level package) can be imported; nothing is imported (a None entry in
    ``sys.modules``, the usual way to block a package, counts as absent)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_extra(module: str, feature: str, extra: str = "metrics") -> ModuleType:
    """Import ``module`` (dotted) for ``feature``; :class:`MissingExtraError` when its package is absent.

    An ImportError raised for another reason (a broken install of the package) propagates unchanged.
    """
    top = module.split(".", 1)[0]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and (e.name == top or not has_module(top)):
            raise MissingExtraError(feature, top, extra) from None
        raise
