"""The data layer's errors: one-line messages that name the file (or parameter) at fault.

Both are ValueError subclasses, which `tinymatch.cli.main` prints as one line without a traceback.
"""

from __future__ import annotations


class DataError(ValueError):
    """A dataset, cache, split or download problem; the message names the file at fault."""


class DownloadError(DataError):
    """The download could not be completed (no network, HTTP error, interrupted transfer)."""


__all__ = ["DataError", "DownloadError"]
