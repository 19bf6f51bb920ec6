"""Builders the composition root (`bootstrap`) delegates to, one concern per module.

Each builder takes the slice of the settings it needs and returns ready objects; none opens
a connection at import time, runs a loop or keeps state.
"""

__all__: list[str] = []
