"""eostats: per-tile statistics of satellite collections, compatible with odc-stats."""
