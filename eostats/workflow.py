"""Where every target of a run lives, and the run's objects built from its validated config.

``rules/common.smk`` and the command line both go through :class:`Run`, so the Snakemake targets and the paths the
package writes can never disagree.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from eostats.config import ConfigError
from eostats.grids import TileGrid, parse_grid
from eostats.layout import OutputProduct
from eostats.periods import PeriodBinning, make_binning, parse_period
from eostats.plugins import StatsPlugin, resolve_plugin
from eostats.taskids import TaskId, select_tasks

#: Snakemake wildcard constraints shared by the rules
PERIOD_REGEX = r"\d{4}(-\d{2}){0,2}--P\d+[YMD]"
INDEX_REGEX = r"[-+]?\d+"


@dataclass(frozen=True)
class Run:
    """One run of the workflow: a validated config (see ``eostats.config.validate_config``)."""

    config: Mapping[str, Any]

    # -- objects -------------------------------------------------------------------------------------
    @cached_property
    def results(self) -> Path:
        return Path(self.config["results"])

    @cached_property
    def grid(self) -> TileGrid:
        grid = parse_grid(self.config["grid"])
        if self.config.get("resolution"):
            grid = grid.with_resolution(self.config["resolution"])
        return grid

    @cached_property
    def binning(self) -> PeriodBinning:
        temporal_range = self.config.get("temporal_range")
        return make_binning(
            frequency=self.config.get("frequency"),
            temporal_range=parse_period(temporal_range) if temporal_range else None,
            years=tuple(self.config["years"]) if self.config.get("years") else None,
        )

    @cached_property
    def plugin(self) -> StatsPlugin:
        return resolve_plugin(self.config["plugin"], self.config.get("plugin_config") or {})

    @cached_property
    def product(self) -> OutputProduct:
        plugin = self.plugin
        settings = {
            "name": plugin.NAME,
            "version": plugin.VERSION,
            "product_family": plugin.PRODUCT_FAMILY,
        }
        settings.update(self.config.get("product") or {})
        location = self.config["output_location"].replace("{results}", str(self.results))
        return OutputProduct.from_config({**settings, "location": location})

    @cached_property
    def excluded_datasets(self) -> frozenset[str]:
        """Dataset ids the run leaves out of every task: ``exclude_datasets`` plus the ids of
        ``exclude_datasets_file`` (one a line; blank lines and ``#`` comments ignored).

        Applied when a tile's datasets are listed (``eostats.odc_index.task_items``, the tile rule's dataset hash),
        not when the cache is built: adding an id re-runs only the tiles that used it. ValueError naming the file
        when it cannot be read.
        """
        ids = {str(i) for i in self.config.get("exclude_datasets") or ()}
        listed = self.config.get("exclude_datasets_file")
        if listed:
            try:
                text = Path(listed).read_text()
            except OSError as err:
                raise ValueError(
                    f"config key 'exclude_datasets_file': cannot read {listed}: {err.strerror or err}"
                ) from None
            for line in text.splitlines():
                entry = line.split("#", 1)[0].strip()
                if entry:
                    ids.add(entry)
        return frozenset(ids)

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def sample_catalog(self) -> Path:
        return self.results / "sample" / "catalog.json"

    @property
    def source_path(self) -> Path | None:
        source = self.config["source"]
        if source["type"] == "sample":
            return self.sample_catalog
        return Path(source["path"]) if source.get("path") else None

    @property
    def log_dir(self) -> Path:
        """The jobs' logs (``LOGS`` in ``rules/common.smk``); also the failure records and the failures file."""
        return self.results / "logs"

    def failure_record_path(self, task: TaskId) -> Path:
        """The JSON record of a failed tile job (:mod:`eostats.failures`); absent while the task has not failed."""
        return self.log_dir / "failures" / task.period / f"x{task.x}_y{task.y}.json"

    @property
    def failures_file(self) -> Path:
        """Every failure record of the run, one JSON object a line (:func:`eostats.failures.write_failures_file`)."""
        return self.log_dir / "failures.jsonl"

    @cached_property
    def cache(self) -> Path:
        return self.results / "tasks" / f"{self.config['run_name']}.sqlite"

    @property
    def task_csv(self) -> Path:
        return self.cache.with_suffix(".csv")

    def period_geojson(self, period: str) -> Path:
        return self.cache.with_name(f"{self.config['run_name']}-{period}.geojson")

    def tile_dir(self, task: TaskId) -> str:
        return self._tile_paths(task)[0]

    def _tile_paths(self, task: TaskId) -> tuple[str, str]:
        """(directory, STAC item) of a task, remembered: planning asks for them several times per tile job, and
        building them (region code, path checks) costs more than Snakemake's own work per job."""
        paths = self._tile_path_memo.get(task)
        if paths is None:
            paths = self._tile_path_memo[task] = (
                self.product.task_dir(task),
                self.product.stac_path(task),
            )
        return paths

    @cached_property
    def _tile_path_memo(self) -> dict[TaskId, tuple[str, str]]:
        return {}

    @cached_property
    def tile_dir_pattern(self) -> str:
        """The tile directory as a Snakemake pattern with wildcards ``period``, ``x`` and ``y``."""
        probe = TaskId("9999--P1Y", 123457, 765431)
        path = self.product.task_dir(probe)
        # region-code formats pad and sign the indices in their own way: find the rendered numbers in the path
        tail = (
            path[len(self.product.location) :] if path.startswith(self.product.location) else path
        )
        tail = tail.replace(probe.period, "{period}")
        tail = re.sub(r"[-+]?0*123457", "{x}", tail, count=1)
        tail = re.sub(r"[-+]?0*765431", "{y}", tail, count=1)
        return self.product.location + tail

    def tile_item(self, task: TaskId) -> str:
        """The tile's STAC item, the file its rule declares: written last, it stands for the whole tile directory,
        so object storage checks one object per tile, not one per band."""
        return self._tile_paths(task)[1]

    @cached_property
    def tile_item_pattern(self) -> str:
        """:meth:`tile_item` as a Snakemake pattern (wildcards ``period``, ``x``, ``y``, each used more than once)."""
        probe = TaskId("9999--P1Y", 123457, 765431)
        path = self.product.stac_path(probe)
        tail = (
            path[len(self.product.location) :] if path.startswith(self.product.location) else path
        )
        tail = tail.replace(probe.period, "{period}")
        tail = re.sub(r"[-+]?0*123457", "{x}", tail)
        tail = re.sub(r"[-+]?0*765431", "{y}", tail)
        return self.product.location + tail

    def mosaic_dir(self, period: str) -> Path:
        return Path(self.product.location) / "mosaics" / period

    def mosaic_paths(self, period: str) -> list[Path]:
        bands = self.mosaic_bands
        prefix = f"{self.product.short_name}_{period}_mosaic"
        if self.config["mosaic"]["per_band"]:
            return [self.mosaic_dir(period) / f"{prefix}_{band}.tif" for band in bands]
        return [self.mosaic_dir(period) / f"{prefix}.tif"]

    @cached_property
    def mosaic_bands(self) -> list[str]:
        return self.config["mosaic"].get("bands") or [m.name for m in self.plugin.measurements]

    # -- tasks ---------------------------------------------------------------------------------------
    def read_task_csv(self, path: Path | None = None) -> list[TaskId]:
        """Tasks listed in the run's CSV (odc-stats format), restricted by the config's ``tasks`` selectors."""
        with open(path or self.task_csv, newline="") as f:
            rows = list(csv.reader(f, skipinitialspace=True))
        tasks = sorted(TaskId(r[0].strip(), int(r[1]), int(r[2])) for r in rows[1:] if r)
        selectors = [str(s) for s in self.config.get("tasks") or []]
        if not selectors:
            return tasks
        try:
            return select_tasks(selectors, tasks)
        except ValueError as err:
            # a user error (a task id not in this run, an index past the end): one line naming the selector
            span = f" ({tasks[0]} to {tasks[-1]})" if tasks else ""
            raise ConfigError(
                f"config key 'tasks': {err}; the task list {path or self.task_csv} has {len(tasks)} tasks{span}"
            ) from None
