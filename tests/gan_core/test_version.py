"""``--version`` on every console script: ``<prog> <version>`` of the installed distribution, exit 0."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

import gan_core
from gan_core.version import package_version


def _console_scripts() -> list[tuple[str, str, str]]:
    """Every ``[project.scripts]`` entry of pyproject.toml: (prog, module, function)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return [(prog, *target.split(":")) for prog, target in scripts.items()]


MAINS = _console_scripts()


def test_every_console_script_is_checked():
    assert len(MAINS) >= 11 and {"san-serve", "translate-export", "sr-metrics"} <= {m[0] for m in MAINS}


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
