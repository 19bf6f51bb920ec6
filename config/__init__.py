"""Settings and the data files that configure the hub (agencies, routes, portals, mappings)."""

from config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
