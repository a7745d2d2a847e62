"""facepipe: an edge-to-cloud face capture pipeline (camera, logger, forwarder, processor)."""

__version__ = "0.1.0"
