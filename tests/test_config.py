"""Config validation: defaults filled in, every kind of mistake reported as one line naming the key."""

from __future__ import annotations

import pytest
import yaml

from eostats.config import ConfigError, load_config, validate_config


def test_default_config_is_valid_and_defaults_are_filled():
    config = load_config("config/config.yaml")
    assert config["plugin"] == "gm-ls"
    assert config["solar_offset_rule"] == "round"
    assert config["mosaic"] == {"enabled": True, "resolution": 120, "per_band": True, "bands": None, "overview_levels": 7}
    assert config["resources"]["tile"] == {"threads": 2, "mem_mb": 3000, "runtime": 60}
    assert validate_config({})["grid"] == "au_30"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"bogus": 1}, "unknown config key 'bogus'; allowed: apply_eodatasets3, aws_unsigned, chunk_size, cog_opts"),
        ({"frequency": "weekly"}, "config key 'frequency' has value 'weekly'; allowed: None, 'annual'"),
        ({"temporal_range": "2020-P1Y"}, "config key 'temporal_range' has invalid value '2020-P1Y'"),
        ({"grid": {"crs": "EPSG:3577", "resolution": 30}}, "config key 'grid' has invalid value"),
        ({"mosaic": {"resolutio": 120}}, "unknown config key 'resolutio' in 'mosaic'; allowed: bands, enabled"),
        ({"resources": {"tile": {"mem_mb": "lots"}}}, "config key 'resources.tile.mem_mb' has invalid value 'lots'"),
        ({"source": {"type": "ftp"}}, "config key 'source.type' has value 'ftp'; allowed: 'sample'"),
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
    from pathlib import Path

    for path in sorted(Path("config/examples").glob("*.yaml")):
        load_config(path)
