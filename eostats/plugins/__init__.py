"""Statistics plugins: a registry of names, and resolution of dotted paths to user plugin classes."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from eostats.plugins.base import Measurement, PluginConfigError, StatsPlugin

_REGISTRY: dict[str, type[StatsPlugin]] = {}

__all__ = [
    "Measurement",
    "PluginConfigError",
    "StatsPlugin",
    "register",
    "registered",
    "resolve_plugin",
]


def register(name: str):
    """Class decorator: make a plugin available under ``name`` in configs (``plugin: name``)."""

    def wrap(cls: type[StatsPlugin]) -> type[StatsPlugin]:
        _REGISTRY[name] = cls
        return cls

    return wrap


# The module of each built-in plugin: a config names one, and only that module is imported (planning a run
# imports the package; importing every plugin and its kernels would cost seconds per `snakemake` invocation).
_BUILTIN_MODULES = {
    "fc-percentiles": "fc_percentiles",
    "gm-generic": "gm_generic",
    "gm-ls": "gm_ls",
    "gm-ls-bitmask": "gm_ls_bitmask",
    "gm-s2": "gm_s2",
    "pq": "pq",
    "pq-ls-bitmask": "pq_ls_bitmask",
    "pq-s2": "pq_s2",
    "ndvi-median": "reducers",
    "band-stats": "reducers",
    "tcw-percentiles": "tcw_percentiles",
    "wofs-summary": "wofs",
    "wofs-summary-fh": "wofs",
}


def registered() -> dict[str, type[StatsPlugin]]:
    _import_builtins()
    return dict(_REGISTRY)


def _import_builtins() -> None:
    # imported for their registration side effect
    from eostats.plugins import (  # noqa: F401
        fc_percentiles,
        gm_generic,
        gm_ls,
        gm_ls_bitmask,
        gm_s2,
        pq,
        pq_ls_bitmask,
        pq_s2,
        reducers,
        tcw_percentiles,
        wofs,
    )


def plugin_class(name_or_path: str) -> type[StatsPlugin]:
    """The class named by a registered name or a dotted path ``package.module.Class``."""
    if name_or_path in _BUILTIN_MODULES:
        importlib.import_module(f"eostats.plugins.{_BUILTIN_MODULES[name_or_path]}")
    if name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path]
    module_name, _, class_name = name_or_path.rpartition(".")
    if not module_name:
        known = ", ".join(sorted(_REGISTRY.keys() | _BUILTIN_MODULES.keys()))
        raise PluginConfigError(
            f"unknown plugin {name_or_path!r}; registered: {known}, or a dotted path pkg.module.Class"
        )
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise PluginConfigError(f"cannot import plugin {name_or_path!r}: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, StatsPlugin)):
        raise PluginConfigError(
            f"plugin {name_or_path!r} is not a subclass of eostats.plugins.StatsPlugin"
        )
    return cls


def resolve_plugin(name_or_path: str, config: Mapping[str, Any] | None = None) -> StatsPlugin:
    """An instance of the plugin, configured with ``plugin_config``; errors name the plugin and the key."""
    cls = plugin_class(name_or_path)
    try:
        return cls(**dict(config or {}))
    except TypeError as err:
        raise PluginConfigError(f"plugin {name_or_path!r}: bad plugin_config: {err}") from None
