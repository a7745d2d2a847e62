"""The error every component stops on with a one-line message and exit code 2 (not a traceback)."""


class FatalError(RuntimeError):
    """Something the component cannot work around by retrying: a missing model, video file or spool volume."""
