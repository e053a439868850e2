"""Import an odc-stats dataset cache (odc-dscache: LMDB, zstd-compressed eo3 documents) as this project's cache.

``eostats import-cache FILE.db`` moves a prepared odc-stats run over without querying its database again:

1. the cache is opened read-only with odc-dscache itself; its grid (``grid/<name>``), product definitions
   (``product/<name>``), save-tasks config (``stats/config``: frequency, temporal range, tiles) and every dataset
   document are read;
2. each document becomes a STAC item exactly as for a datacube source (:func:`eostats.odc_index.record_to_stac`:
   the eo3 record is embedded under ``"odc:eo3"``, the product definitions go into the cache settings);
3. the SQLite cache is built from those items on the same grid and binning, with odc-stats' solar offset rule
   (``int(lon/15 + 0.5)`` hours, what odc-dscache uses);
4. the tasks of the new cache are compared with the LMDB task groups (``<grid>/<period>/<x>/<y>``, lists of
   dataset UUIDs). They agree unless odc-stats' own quirks put a dataset elsewhere (a footprint only touching a
   tile edge, docs/quirks.md): the differences are reported, and ``strict`` makes them an error.

The binning comes from ``stats/config``; a cache without it is binned from its task names (all ``YYYY--P1Y``:
annual over those years; a single other period: that period), or from the ``frequency``/``temporal_range`` given.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eostats.fusing import DatasetRecord
from eostats.grids import TileGrid, parse_grid
from eostats.periods import PeriodBinning, make_binning
from eostats.taskids import TaskId

log = logging.getLogger("eostats.dscache_import")


class DscacheImportError(ValueError):
    """An odc-stats cache that cannot be imported; the message names the file and the problem."""


@dataclass
class ImportReport:
    """What :func:`import_dscache` did."""

    source: str
    output: Path
    grid: str
    binning: dict
    n_documents: int
    n_groups: int
    n_tasks: int
    differences: dict[str, tuple[list[str], list[str]]] = field(
        default_factory=dict
    )  # task: (missing, extra)
    seconds: float = 0.0

    def __str__(self) -> str:
        same = (
            "the same tasks as"
            if not self.differences
            else f"{len(self.differences)} task(s) differing from"
        )
        return (
            f"{self.output}: {self.n_documents} datasets, {self.n_tasks} tasks on grid {self.grid} "
            f"({self.binning['frequency']}); {same} the {self.n_groups} task groups of {self.source} "
            f"in {self.seconds:.1f} s"
        )


def _open(path: str | Path):
    from odc.dscache import open_ro

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"odc-stats cache {path} does not exist")
    try:
        return open_ro(str(p))
    except Exception as err:  # lmdb raises its own errors for files that are not LMDB
        raise DscacheImportError(f"{path} is not an odc-stats (odc-dscache) cache: {err}") from None


def tile_grid_of(gridspec: Any, name: str) -> TileGrid:
    """This project's :class:`TileGrid` of an odc-geo ``GridSpec`` stored in the cache (same tiles and pixels)."""
    res = gridspec.resolution
    return parse_grid(
        {
            "name": name.replace("-", "_").replace(";", "_").replace(":", "_") or "custom",
            "crs": str(gridspec.crs),
            "resolution": [abs(float(res.y)), abs(float(res.x))],
            "tile_size": [int(gridspec.tile_shape.y), int(gridspec.tile_shape.x)],
            "origin": [float(gridspec.origin.x), float(gridspec.origin.y)],
        }
    )


_GROUP = re.compile(r"^(?P<grid>.+)/(?P<period>[^/]+)/(?P<x>[-+]?\d+)/(?P<y>[-+]?\d+)$")


def task_groups(cache: Any, grid_name: str) -> dict[TaskId, set[str]]:
    """The cache's tasks: ``{TaskId: dataset UUIDs}`` from groups named ``<grid>/<period>/<x>/<y>``."""
    out: dict[TaskId, set[str]] = {}
    for name, _count in cache.groups(prefix=f"{grid_name}/"):
        match = _GROUP.match(name)
        if not match:
            continue
        task = TaskId(match["period"], int(match["x"]), int(match["y"]))
        out[task] = {str(u) for u in cache.get_group(name) or []}
    return out


def binning_of(
    config: dict, periods: set[str], frequency: str | None, temporal_range: str | None
) -> PeriodBinning:
    """The time binning of an imported cache (see the module docstring)."""
    if frequency or temporal_range:
        return make_binning(frequency, temporal_range)
    if config.get("freq") or config.get("temporal_range"):
        freq = config.get("freq")
        return make_binning(
            freq if freq not in ("", None) else None, config.get("temporal_range") or None
        )
    if periods and all(re.fullmatch(r"\d{4}--P1Y", p) for p in periods):
        return make_binning("annual", years=sorted(int(p[:4]) for p in periods))
    if len(periods) == 1:
        return make_binning(None, next(iter(periods)))
    raise DscacheImportError(
        f"the cache records no save-tasks config and its periods {sorted(periods)[:4]} do not tell the "
        "frequency: give --frequency (and --temporal-range)"
    )


def import_dscache(
    path: str | Path,
    output: str | Path,
    *,
    grid_name: str | None = None,
    frequency: str | None = None,
    temporal_range: str | None = None,
    strict: bool = False,
) -> ImportReport:
    """Import the odc-stats cache at ``path`` into a new SQLite cache at ``output``; returns the report."""
    from eostats.cache import DatasetCache, build_cache
    from eostats.eo3 import _plain
    from eostats.odc_index import _metadata_type, record_to_stac

    started = time.perf_counter()
    cache = _open(path)
    grids = cache.grids
    if not grids:
        raise DscacheImportError(
            f"{path} has no grid (made by generate-cache?): nothing to import as tasks"
        )
    if grid_name is None:
        if len(grids) > 1:
            raise DscacheImportError(
                f"{path} has several grids {sorted(grids)}: choose one with --grid"
            )
        grid_name = next(iter(grids))
    if grid_name not in grids:
        raise DscacheImportError(f"{path} has no grid {grid_name!r}; it has {sorted(grids)}")
    grid = tile_grid_of(grids[grid_name], grid_name)
    groups = task_groups(cache, grid_name)
    config = (cache.get_info_dict("stats/") or {}).get("config") or {}
    binning = binning_of(config, {t.period for t in groups}, frequency, temporal_range)

    products = {name: dict(p.definition) for name, p in cache.products.items()}
    metadata_types = {name: m for name, m in cache.metadata.items()}

    def items():
        for ds in cache.get_all():
            record = DatasetRecord(ds.product.name, _plain(ds.metadata_doc), ds.uri)
            metadata_type = metadata_types.get(ds.product.metadata_type.name) or _metadata_type()
            yield record_to_stac(record, products[record.product], metadata_type)

    source = {"type": "odc-dscache", "path": str(Path(path).absolute()), "grid": grid_name}
    settings = {
        "solar_offset_rule": "odc-stats",
        "tiles": config.get("tiles"),
        "odc_products": products,
    }
    summary = build_cache(items(), grid, binning, Path(output), source, settings)

    differences: dict[str, tuple[list[str], list[str]]] = {}
    with DatasetCache.open(output) as imported:
        ours: dict[TaskId, set[str]] = defaultdict(set)
        for task in imported.task_ids():
            ours[task] = set(imported.dataset_ids(task))
    for task in sorted(set(ours) | set(groups)):
        theirs = groups.get(task, set())
        mine = ours.get(task, set())
        if theirs != mine:
            differences[str(task)] = (sorted(theirs - mine), sorted(mine - theirs))
    report = ImportReport(
        source=str(path),
        output=Path(output),
        grid=grid_name,
        binning=binning.to_dict(),
        n_documents=summary.n_items,
        n_groups=len(groups),
        n_tasks=summary.n_tasks,
        differences=differences,
        seconds=round(time.perf_counter() - started, 3),
    )
    if differences:
        first = next(iter(differences.items()))
        message = (
            f"{len(differences)} task(s) of {path} differ after import, e.g. {first[0]}: "
            f"missing {first[1][0][:3]}, extra {first[1][1][:3]}"
        )
        if strict:
            Path(output).unlink(missing_ok=True)
            raise DscacheImportError(message)
        log.warning("%s", message)
    return report
