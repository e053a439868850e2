"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from eostats.sample import SampleSpec, generate_sample_collection


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of ``catalog.json`` of the tiny synthetic sample, generated once per session.

    ``SampleSpec.tiny()``: 10 scenes of ~200 x 250 px (30 m) near Canberra, 2020 and 2021,
    paths 90 (EPSG:32755) and 89 (EPSG:32756), one two-row pass per path, footprints crossing
    the default grid's tile edges (tiles x275..276, y97..98). ``items.ndjson`` and ``items.json``
    lie beside the catalog. Treat it as read-only: other tests share it.
    """
    out_dir = tmp_path_factory.mktemp("sample") / "tiny"
    return generate_sample_collection(out_dir, SampleSpec.tiny())
