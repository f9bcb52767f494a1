"""geoseg: segment remote-sensing imagery into georeferenced maps."""

__version__ = "0.1.0"
