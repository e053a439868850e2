"""Output product naming and odc-stats' directory and file layout.

One task (period, x, y) of a product writes into one directory::

    {location}/x{X}/y{Y}/{period}/{short_name}_{region_code}_{period}_{maturity}_{band}.tif
                                  {short_name}_{region_code}_{period}_{maturity}.sha1
                                  {short_name}_{region_code}_{period}_{maturity}.stac-item.json

for example ``results/ga_ls8c_nbart_gm_cyear_3/3-0-0/x49/y24/2015--P1Y/ga_ls8c_nbart_gm_cyear_3_x49y24_2015--P1Y_final_nbart_red.tif``.

Differences from odc-stats (see docs/quirks.md):

- the region code is split into its two directory levels **before the ``y``** (``x123y05`` → ``x123/y05``);
  odc-stats halves the string by length, which gives ``x12/3y05`` as soon as x and y have different widths;
- every name that ends up in a path (product, short name, version, region code, period, band) is checked so that
  it cannot escape ``location``: only ``[A-Za-z0-9_.+-]`` is accepted, and never ``.`` or ``..``.

Paths are returned as strings (``location`` may be a URL such as ``s3://bucket/prefix``); they are joined with
``/``.
"""

from __future__ import annotations

import posixpath
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eostats.taskids import TaskId

__all__ = ["DEFAULT_LOCATION", "OutputProduct", "check_path_name", "split_region_code"]

DEFAULT_LOCATION = "results/{product}/{version}"

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")

#: odc-stats ``product:`` keys that only configure eodatasets3 / explorer output, which eostats does not write;
#: they are accepted (so odc-stats configs load unchanged) and ignored.
_IGNORED_ODC_STATS_KEYS = frozenset(
    {
        "naming_conventions_values",
        "explorer_path",
        "inherit_skip_properties",
        "preview_image_ows_style",
        "classifier",
        "collection_number",
        "nodata",
    }
)


def check_path_name(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one path component, else raise ``ValueError`` naming it.

    Safe means non-empty, only ``[A-Za-z0-9_.+-]`` (so no ``/``, ``\\``, spaces or template braces) and not
    ``.`` or containing ``..``.
    """
    if (
        not isinstance(value, str)
        or not _SAFE_NAME.fullmatch(value)
        or ".." in value
        or value == "."
    ):
        raise ValueError(
            f"{what} {value!r} cannot be used in output paths: use only letters, digits and _ . + - "
            "(no '/', no '..')"
        )
    return value


def split_region_code(region_code: str) -> tuple[str, str]:
    """The two directory levels of a region code: ``x49y24`` → ``("x49", "y24")``.

    The cut is before the last ``y`` that is not the first character, so codes whose x and y parts differ in
    width split correctly (``x123y05`` → ``x123``, ``y05``). A code without such a ``y`` (a custom
    ``region_code_format``) falls back to odc-stats' rule: cut in the middle of the string.
    """
    cut = region_code.rfind("y")
    if cut <= 0:
        cut = len(region_code) // 2
    return region_code[:cut], region_code[cut:]


def _normalised(path: str) -> str:
    """``path`` without ``.``/``..`` components or repeated slashes (a URL's ``//`` included, on both sides of a
    comparison alike)."""
    return posixpath.normpath(re.sub("/+", "/", path)) if path else "."


def _dashed(version: str) -> str:
    return version.replace(".", "-")


@dataclass(frozen=True)
class OutputProduct:
    """Naming of one output product, and where each task's files go.

    ``location`` is a template rendered once, at construction, with ``{product}``/``{name}`` (the product
    name), ``{short_name}``, ``{version}`` and ``{version_dashed}`` (``1.2.3`` → ``1-2-3``) and ``{version_raw}``
    (``1.2.3``); a trailing ``/`` is removed. So ``product.location`` is always the concrete output prefix.

    ``maturity`` (``"final"`` by default) is appended to file prefixes; ``None`` means no suffix.
    ``collections_site``: if set, STAC items link to ``https://{collections_site}/product/{name}``.
    """

    name: str
    short_name: str
    version: str
    product_family: str = "statistics"
    producer: str = "eostats"
    maturity: str | None = "final"
    region_code_format: str = "x{x:02d}y{y:02d}"
    location: str = DEFAULT_LOCATION
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False)
    collections_site: str | None = None

    def __post_init__(self) -> None:
        check_path_name(self.name, "product name")
        check_path_name(self.short_name, "product short_name")
        check_path_name(self.version, "product version")
        if self.maturity is not None:
            check_path_name(self.maturity, "product maturity")
        # render the location template once so that `location` is the concrete prefix everywhere
        object.__setattr__(self, "location", self._render_location(self.location))
        object.__setattr__(self, "properties", dict(self.properties))
        self.region_code(0, 0)  # fail early on a broken region_code_format

    def _render_location(self, template: str) -> str:
        values = {
            "product": self.name,
            "name": self.name,
            "short_name": self.short_name,
            "version": _dashed(self.version),
            "version_dashed": _dashed(self.version),
            "version_raw": self.version,
        }
        keys = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(keys - values.keys())
        if unknown:
            raise ValueError(
                f"output location {template!r} uses unknown template key(s) {unknown}; "
                f"known keys: {sorted(values)}"
            )
        rendered = template.format(**values)
        return rendered.rstrip("/") if rendered not in ("/", "") else rendered

    # -- names -----------------------------------------------------------------------------------------
    @property
    def version_dashed(self) -> str:
        return _dashed(self.version)

    def region_code(self, x: int, y: int) -> str:
        """``region_code_format.format(x=x, y=y)``, e.g. ``x49y24``; checked to be path-safe."""
        try:
            code = self.region_code_format.format(x=x, y=y)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"region_code_format {self.region_code_format!r} cannot format tile ({x}, {y}): {e}"
            ) from e
        return check_path_name(code, "region code")

    def task_dir(self, task: TaskId) -> str:
        """``{location}/x49/y24/2015--P1Y``: the directory of every file of ``task``."""
        x_part, y_part = split_region_code(self.region_code(task.x, task.y))
        period = check_path_name(task.period, "period")
        path = f"{self.location}/{x_part}/{y_part}/{period}"
        # defence in depth: whatever the names, a task's directory is three levels below the location
        parent = posixpath.dirname(posixpath.dirname(posixpath.dirname(_normalised(path))))
        if (parent or ".") != _normalised(self.location):
            raise ValueError(
                f"task {task} would be written to {path!r}, outside the output location"
            )
        return path

    def file_prefix(self, task: TaskId) -> str:
        """``{short_name}_x49y24_2015--P1Y_final`` (no ``_final`` when maturity is None)."""
        prefix = f"{self.short_name}_{self.region_code(task.x, task.y)}_{check_path_name(task.period, 'period')}"
        return f"{prefix}_{self.maturity}" if self.maturity else prefix

    def _path(self, task: TaskId, suffix: str) -> str:
        return f"{self.task_dir(task)}/{self.file_prefix(task)}{suffix}"

    def band_path(self, task: TaskId, band: str) -> str:
        """The COG of one measurement: ``{task_dir}/{prefix}_{band}.tif``."""
        return self._path(task, f"_{check_path_name(band, 'band name')}.tif")

    def stac_path(self, task: TaskId) -> str:
        """The STAC item, written last: ``{task_dir}/{prefix}.stac-item.json``."""
        return self._path(task, ".stac-item.json")

    def sha1_path(self, task: TaskId) -> str:
        """The checksums of the task's files: ``{task_dir}/{prefix}.sha1``."""
        return self._path(task, ".sha1")

    @property
    def product_overview_href(self) -> str | None:
        """``https://{collections_site}/product/{name}``, or None when no site is configured."""
        if not self.collections_site:
            return None
        return f"https://{self.collections_site.strip('/')}/product/{self.name}"

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, mapping: Mapping[str, Any], *, location: str | None = None, plugin: Any = None
    ) -> OutputProduct:
        """Build from an odc-stats ``product:`` mapping (plus eostats' ``location``).

        Accepted keys: ``name``, ``short_name`` (defaults to ``name``), ``version``, ``product_family``,
        ``producer``, ``maturity`` (absent → ``"final"``; ``null`` → no suffix), ``region_code_format``,
        ``properties``, ``collections_site``, ``location`` (also ``output_location``). odc-stats' eodatasets3-only
        keys (``explorer_path``, ``naming_conventions_values``, ...) are accepted and ignored; any other key is
        a ``ValueError`` naming it. ``plugin`` (an object with ``NAME``, ``SHORT_NAME``, ``VERSION``,
        ``PRODUCT_FAMILY``) supplies defaults for missing keys, as odc-stats' ``product_for_plugin`` does.
        """
        known = {f for f in cls.__dataclass_fields__} | {"output_location"}
        unknown = sorted(set(mapping) - known - _IGNORED_ODC_STATS_KEYS)
        if unknown:
            raise ValueError(f"unknown product key(s) {unknown}")

        def plugin_default(attr: str) -> Any:
            return getattr(plugin, attr, None) or None

        name = mapping.get("name") or plugin_default("NAME")
        if not name:
            raise ValueError("product name is missing (set product.name)")
        version = mapping.get("version") or plugin_default("VERSION")
        if version is None:
            raise ValueError(f"product {name!r} has no version (set product.version)")
        kwargs: dict[str, Any] = {
            "name": name,
            "short_name": mapping.get("short_name") or plugin_default("SHORT_NAME") or name,
            "version": str(version),
        }
        family = mapping.get("product_family") or plugin_default("PRODUCT_FAMILY")
        if family:
            kwargs["product_family"] = family
        for key in ("producer", "region_code_format", "collections_site"):
            if mapping.get(key) is not None:
                kwargs[key] = mapping[key]
        if "maturity" in mapping:
            kwargs["maturity"] = mapping["maturity"] or None
        if mapping.get("properties"):
            kwargs["properties"] = dict(mapping["properties"])
        loc = location or mapping.get("location") or mapping.get("output_location")
        if loc:
            kwargs["location"] = loc
        return cls(**kwargs)
