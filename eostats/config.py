"""Run configuration: JSON-schema validation with defaults, and the objects a run is made of.

The schema (``eostats/schemas/config.schema.yaml``, linked from ``config/``) is the single description of every
key. Validation fills in defaults and turns the first violation into one line that names the key and what is
allowed, so a bad config stops a run before any work starts and without a traceback.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
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
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = "" if key == "(top level)" else f" in '{key}'"
        return f"unknown config key{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}{where}; allowed: {', '.join(allowed)}"
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in schema.get("enum", []))
        return f"config key '{key}' has value {error.instance!r}; allowed: {allowed}"
    if error.validator == "oneOf":
        desc = schema.get("description", "").strip()
        return f"config key '{key}' has invalid value {error.instance!r}" + (f"; expected {desc}" if desc else "")
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
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise ConfigError(_describe(errors[0]))
    _fold_save_tasks_keys(instance, given_source="source" in config)
    return instance


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
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    data.update(overrides or {})
    return validate_config(data)
