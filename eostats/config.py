"""Run configuration: JSON-schema validation with defaults, and the objects a run is made of.

The schema (``eostats/schemas/config.schema.yaml``, linked from ``config/``) is the single description of every
key. Validation fills in defaults and turns the first violation into one line that names the key and what is
allowed, so a bad config stops a run before any work starts and without a traceback.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A user error in the run configuration; the message names the key and what is allowed."""


@cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(schema: dict, root: dict) -> dict:
    ref = schema.get("$ref")
    if ref and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        return {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Insert ``default`` values of missing properties, recursing into objects that exist or were defaulted."""
    schema = _resolve(schema, root)
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        where = "" if key == "(top level)" else f" in '{key}'"
        return f"unknown config key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}{where}; allowed: {', '.join(allowed)}"
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in schema.get("enum", []))
        return f"config key '{key}' has value {error.instance!r}; allowed: {allowed}"
    if error.validator == "oneOf":
        desc = schema.get("description", "").strip()
        return f"config key '{key}' has invalid value {error.instance!r}" + (
            f"; expected {desc}" if desc else ""
        )
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    desc = schema.get("description")
    hint = f" ({desc.strip()})" if desc else ""
    return f"config key '{key}' has invalid value {error.instance!r}: {error.message}{hint}"


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled in; raise ConfigError on the first problem."""
    schema = load_schema()
    instance = copy.deepcopy(dict(config))
    _fill_defaults(instance, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path))
    )
    if errors:
        raise ConfigError(_describe(errors[0]))
    _fold_save_tasks_keys(instance, given_source="source" in config)
    check_run_settings(instance)
    return instance


#: keys checked by the same builder as another key, named when the message mentions them
_MORE_SPECIFIC_KEYS = {"product": ("output_location",), "plugin": ("plugin_config",)}


def _check(key: str, build: Callable[[], Any]) -> Any:
    """``build()``, with a ValueError/KeyError/ImportError turned into one ConfigError line naming ``key``."""
    try:
        return build()
    except (ValueError, KeyError, TypeError, ImportError) as err:
        message = (
            err.args[0] if isinstance(err, KeyError) and err.args else err
        )  # str(KeyError) adds quotes
        text = " ".join(str(message).split())  # one line, even for multi-line messages
        # a few builders check two keys: name the one the message is about
        key = next(
            (
                k
                for k in _MORE_SPECIFIC_KEYS.get(key, ())
                if k.replace("_", " ") in text.replace("_", " ")
            ),
            key,
        )
        raise ConfigError(f"config key '{key}': {text}") from None


def check_task_selector(selector: Any) -> None:
    """ValueError naming ``selector`` unless it is a task id, a non-negative index or a slice.

    Only the form is checked here: whether a task id exists is known once the task list is (see
    :meth:`eostats.workflow.Run.read_task_csv`).
    """
    from eostats.taskids import parse_task_id, select_tasks

    text = str(selector).strip()
    if any(sep in text for sep in ("/", ",", "_")):
        parse_task_id(text)
    elif not re.fullmatch(r"\+?\d+", text):
        # over no tasks: a good slice selects nothing, a bad one or a negative index raises naming it
        select_tasks([text], [])


def check_run_settings(instance: Mapping[str, Any]) -> None:
    """Build what a run is made of from a schema-valid config, so that an unknown grid, an impossible
    resolution, a bad period, an unknown plugin, a product name that cannot be a path, bad COG options or a
    malformed task selector stop the run before any work starts (ConfigError naming the key)."""
    from eostats.cog import CogOptions
    from eostats.grids import parse_grid
    from eostats.periods import make_binning, parse_period
    from eostats.workflow import Run  # the workflow module imports the plugins: not at import time

    grid = _check("grid", lambda: parse_grid(instance["grid"]))
    if instance.get("resolution"):
        _check("resolution", lambda: grid.with_resolution(instance["resolution"]))
    temporal_range = instance.get("temporal_range")
    period = (
        _check("temporal_range", lambda: parse_period(temporal_range)) if temporal_range else None
    )
    years = tuple(instance["years"]) if instance.get("years") else None
    _check(
        "years" if years else "frequency",
        lambda: make_binning(
            frequency=instance.get("frequency"), temporal_range=period, years=years
        ),
    )
    run = Run(instance)
    plugin = _check("plugin", lambda: run.plugin)
    product = _check("product", lambda: run.product)
    _check("output_location", lambda: _inside_results(product.location, run.results))
    for m in plugin.measurements:
        _check(
            "cog_opts",
            lambda m=m: CogOptions.from_config(
                instance.get("cog_opts") or {}, band=m.name, categorical=m.categorical
            ),
        )
    names = [m.name for m in plugin.measurements]
    unknown = sorted(set(instance["mosaic"].get("bands") or []) - set(names))
    if unknown:
        raise ConfigError(
            f"config key 'mosaic.bands': {', '.join(map(repr, unknown))} "
            f"{'are not measurements' if len(unknown) > 1 else 'is not a measurement'} of plugin "
            f"{instance['plugin']!r}; allowed: {', '.join(names)}"
        )
    for selector in instance.get("tasks") or []:
        _check("tasks", lambda selector=selector: check_task_selector(selector))


def _inside_results(location: str, results: Path) -> None:
    """A relative output location may not climb out of the working directory (``..`` components)."""
    if "://" in location:
        return
    parts = Path(location).parts
    if ".." in parts:
        raise ValueError(f"output location {location!r} climbs out of its folder with '..'")


#: odc-stats save-tasks keys that describe a datacube source
SAVE_TASKS_SOURCE_KEYS = (
    "input_products",
    "gqa",
    "dataset_filter",
    "ignore_time",
    "optional_products",
)


def _fold_save_tasks_keys(instance: dict[str, Any], *, given_source: bool) -> None:
    """odc-stats' top-level save-tasks keys describe a datacube source: move them into ``source``.

    A config with ``input_products`` and no ``source`` (an odc-stats YAML) reads from the datacube index; keys
    already in ``source`` win. With another source type these keys are an error, not silently ignored.
    """
    present = [k for k in SAVE_TASKS_SOURCE_KEYS if instance.get(k) not in (None, "", [], {})]
    if present and not given_source and instance.get("input_products"):
        instance["source"] = {"type": "datacube"}
    source = instance["source"]
    if source.get("type") == "datacube":
        for key in present:
            if source.get(key) in (None, "", [], {}):
                source[key] = instance[key]
        if not source.get("input_products"):
            raise ConfigError(
                "config key 'source': a datacube source needs input_products (e.g. ga_ls8c_ard_3)"
            )
    elif present:
        raise ConfigError(
            f"config key{'s' if len(present) > 1 else ''} {', '.join(map(repr, present))} "
            f"{'describe' if len(present) > 1 else 'describes'} a datacube "
            f"source, but source type is {source.get('type')!r} (set source: {{type: datacube}})"
        )


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, merge ``overrides`` on top (top-level keys), and validate it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    data.update(overrides or {})
    return validate_config(data)
