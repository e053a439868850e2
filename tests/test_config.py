"""Config validation: defaults filled in, every kind of mistake reported as one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eostats.config import ConfigError, load_config, validate_config


def test_default_config_is_valid_and_defaults_are_filled():
    config = load_config("config/config.yaml")
    assert config["plugin"] == "gm-ls"
    assert config["solar_offset_rule"] == "round"
    assert config["mosaic"] == {
        "enabled": True,
        "resolution": 120,
        "per_band": True,
        "bands": None,
        "overview_levels": 7,
    }
    assert config["resources"]["tile"] == {"threads": 2, "mem_mb": 3000, "runtime": 60}
    assert validate_config({})["grid"] == "au_30"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            {"bogus": 1},
            "unknown config key 'bogus'; allowed: apply_eodatasets3, aws_unsigned",
        ),
        (
            {"frequency": "weekly"},
            "config key 'frequency' has value 'weekly'; allowed: None, 'annual'",
        ),
        (
            {"temporal_range": "2020-P1Y"},
            "config key 'temporal_range' has invalid value '2020-P1Y'",
        ),
        ({"grid": {"crs": "EPSG:3577", "resolution": 30}}, "config key 'grid' has invalid value"),
        (
            {"mosaic": {"resolutio": 120}},
            "unknown config key 'resolutio' in 'mosaic'; allowed: bands, enabled",
        ),
        (
            {"resources": {"tile": {"mem_mb": "lots"}}},
            "config key 'resources.tile.mem_mb' has invalid value 'lots'",
        ),
        (
            {"source": {"type": "ftp"}},
            "config key 'source.type' has value 'ftp'; allowed: 'sample'",
        ),
        ({"run_name": "../escape"}, "config key 'run_name' has invalid value '../escape'"),
        ({"tiles": "1-3,4:5"}, "config key 'tiles' has invalid value '1-3,4:5'"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(bad, message):
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match=f"config file {bad} is not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_every_example_config_is_valid():
    for path in sorted(Path("config/examples").glob("*.yaml")):
        load_config(path)


# --- every kind of bad config, through validation, `snakemake -n` and the `eostats` command line ---------------

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: (overrides of a valid config, the key the message names, a fragment saying what is wrong or allowed)
BAD_CONFIGS = [
    ({"bogus": 1}, "unknown config key 'bogus'", "allowed: apply_eodatasets3"),
    (
        {"product": {"name": "x", "colour": "red"}},
        "unknown config key 'colour' in 'product'",
        "allowed: classifier",
    ),
    (
        {"frequency": "weekly"},
        "config key 'frequency' has value 'weekly'",
        "allowed: None, 'annual'",
    ),
    ({"grid": "au_31"}, "config key 'grid': unknown grid 'au_31'", "known grids: africa"),
    (
        {"grid": "epsg:3577;30;abc"},
        "config key 'grid': custom grid 'epsg:3577;30;abc'",
        "expected 'crs;res;shape'",
    ),
    (
        {"resolution": 7},
        "config key 'resolution': resolution 7 does not divide",
        "tile size 96000 x 96000",
    ),
    (
        {"temporal_range": "2020-13--P1Y"},
        "config key 'temporal_range': bad period '2020-13--P1Y'",
        "month",
    ),
    (
        {"temporal_range": "2020-P1Y"},
        "config key 'temporal_range' has invalid value '2020-P1Y'",
        "does not match",
    ),
    ({"years": [2020], "temporal_range": "2020--P1Y"}, "config key 'years'", "not both"),
    ({"plugin": "nope"}, "config key 'plugin': unknown plugin 'nope'", "registered: band-stats"),
    (
        {"plugin": "no_such_module.Plugin"},
        "config key 'plugin': cannot import plugin",
        "no_such_module",
    ),
    ({"plugin_config": {"bogus": 1}}, "config key 'plugin_config'", "bogus"),
    (
        {"product": {"name": "../up"}},
        "config key 'product': product name '../up'",
        "no '/', no '..'",
    ),
    ({"product": {"name": "/etc"}}, "config key 'product': product name '/etc'", "no '/', no '..'"),
    (
        {"product": {"name": "a b"}},
        "config key 'product': product name 'a b'",
        "only letters, digits",
    ),
    (
        {"product": {"name": "x", "version": "1/../.."}},
        "config key 'product': product version",
        "no '..'",
    ),
    (
        {"product": {"region_code_format": "../x{x}y{y}"}},
        "config key 'product': region code '../x0y0'",
        "no '..'",
    ),
    (
        {"product": {"region_code_format": "/x{x}/y{y}"}},
        "config key 'product': region code '/x0/y0'",
        "no '/'",
    ),
    (
        {"product": {"region_code_format": "x{x}y{z}"}},
        "config key 'product': region_code_format",
        "'z'",
    ),
    (
        {"output_location": "{results}/{bogus}"},
        "config key 'output_location'",
        "known keys: ['name'",
    ),
    (
        {"output_location": "../../outside"},
        "config key 'output_location'",
        "climbs out of its folder",
    ),
    (
        {"cog_opts": {"compress": "jpeg2000"}},
        "config key 'cog_opts': cog compress 'jpeg2000'",
        "['deflate'",
    ),
    (
        {"mosaic": {"bands": ["ndvi"]}},
        "config key 'mosaic.bands': 'ndvi' is not a measurement",
        "allowed: total",
    ),
    (
        {"tasks": ["garbage"]},
        "config key 'tasks': bad task selector 'garbage'",
        "an index (3) or a slice",
    ),
    (
        {"tasks": ["2021--P1Y/x/y"]},
        "config key 'tasks': bad task id '2021--P1Y/x/y'",
        "not a tile index",
    ),
    ({"tasks": ["-1"]}, "config key 'tasks': task index '-1' is negative", "'-1:'"),
    (
        {"run_name": "../escape"},
        "config key 'run_name' has invalid value '../escape'",
        "does not match",
    ),
]


def valid_config(**overrides) -> dict:
    """A small valid config: the clear-count statistic (measurements total, clear)."""
    config = {"plugin": "pq", "plugin_config": {"filters": {}}}
    config.update(overrides)
    return config


def test_the_base_of_the_bad_configs_is_valid():
    from eostats.workflow import Run

    assert [m.name for m in Run(validate_config(valid_config())).plugin.measurements] == [
        "total",
        "clear",
    ]


@pytest.mark.parametrize(
    ("bad", "key", "allowed"), BAD_CONFIGS, ids=[str(c[0]) for c in BAD_CONFIGS]
)
def test_bad_config_is_one_line_naming_key_and_allowed(bad, key, allowed):
    with pytest.raises(ConfigError) as err:
        validate_config(valid_config(**bad))
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(key), text
    assert allowed in text, text


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("bad", "key", "allowed"), BAD_CONFIGS, ids=[str(c[0]) for c in BAD_CONFIGS]
)
def test_cli_stops_on_bad_config_with_one_line(tmp_path, bad, key, allowed):
    from click.testing import CliRunner

    from eostats.cli import main

    config = write_yaml(tmp_path / "bad.yaml", valid_config(**bad))
    # the config is checked before the (missing) cache is opened
    result = CliRunner().invoke(
        main, ["run", str(tmp_path / "none.db"), "--config", str(config), "--dryrun"]
    )
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {key}"), lines[0]
    assert allowed in lines[0]


#: a sample of the cases through a real `snakemake -n` (each costs a Snakemake start-up)
SNAKEMAKE_CASES = [BAD_CONFIGS[i] for i in (0, 5, 9, 16)]


@pytest.mark.parametrize(
    ("bad", "key", "allowed"), SNAKEMAKE_CASES, ids=[str(c[0]) for c in SNAKEMAKE_CASES]
)
def test_snakemake_dry_run_stops_with_one_line_and_no_traceback(tmp_path, bad, key, allowed):
    config = write_yaml(
        tmp_path / "bad.yaml", valid_config(results=str(tmp_path / "results"), **bad)
    )
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
        + ["--configfile", str(config), "--cores", "1", "-n"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and 'File "' not in out, out
    errors = [line for line in out.splitlines() if "invalid configuration" in line]
    assert errors == [f"eostats: invalid configuration: {errors[0].split(': ', 2)[2]}"], out
    message = errors[0].split("invalid configuration: ", 1)[1]
    assert message.startswith(key) and allowed in message, message
    assert not (tmp_path / "results").exists(), "nothing was made"


def test_task_directory_cannot_leave_the_output_location(monkeypatch):
    """Names are checked where they are configured; the directory of a task is checked again where it is built."""
    from eostats import layout
    from eostats.taskids import TaskId

    product = layout.OutputProduct(name="p", short_name="p", version="1.0", location="out/p")
    assert product.task_dir(TaskId("2021--P1Y", 3, -4)) == "out/p/x03/y-4/2021--P1Y"
    # a region code that slipped past the name check (e.g. a future format) must still not climb out
    monkeypatch.setattr(layout, "split_region_code", lambda code: ("..", ".."))
    with pytest.raises(ValueError, match="outside the output location"):
        product.task_dir(TaskId("2021--P1Y", 3, -4))
