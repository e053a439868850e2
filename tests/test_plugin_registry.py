"""The plugin registry: every built-in name resolves, and naming one imports only its own module."""

from __future__ import annotations

import subprocess
import sys

from eostats.plugins import _BUILTIN_MODULES, registered


def test_every_registered_plugin_is_listed_with_its_module() -> None:
    classes = registered()
    assert set(classes) == set(_BUILTIN_MODULES)
    for name, module in _BUILTIN_MODULES.items():
        assert classes[name].__module__ == f"eostats.plugins.{module}", name


def test_resolving_one_plugin_imports_no_other_plugin_module() -> None:
    code = (
        "import sys\n"
        "from eostats.plugins import plugin_class\n"
        "plugin_class('pq')\n"
        "print(sorted(m for m in sys.modules if m.startswith('eostats.plugins.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = eval(out)
    assert "eostats.plugins.pq" in loaded
    assert not {
        f"eostats.plugins.{m}" for m in ("fc_percentiles", "wofs", "gm_s2", "reducers")
    } & set(loaded)
