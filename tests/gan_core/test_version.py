"""``--version`` on every console script: ``<prog> <version>`` of the installed distribution, exit 0."""

from __future__ import annotations

from importlib import metadata

import pytest

import gan_core
from gan_core.version import package_version

MAINS = [
    ("sr-train", "sr_app.cli", "train_main"),
    ("sr-infer", "sr_app.cli", "infer_main"),
    ("sr-eval", "sr_app.cli", "eval_main"),
    ("sr-export", "sr_app.cli", "export_main"),
    ("sr-metrics", "sr_app.metrics_cli", "main"),
    ("san-weights", "gan_core.cli", "weights_main"),
    ("translate-train", "translate_app.cli", "train_main"),
    ("translate-infer", "translate_app.cli", "infer_main"),
    ("translate-eval", "translate_app.cli", "eval_main"),
]


def test_the_version_is_the_distributions():
    assert package_version() == metadata.version("san-gan") == gan_core.__version__


@pytest.mark.parametrize(("prog", "module", "func"), MAINS)
def test_every_console_script_has_version(prog, module, func, capsys):
    import importlib

    main = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"{prog} {package_version()}\n"
