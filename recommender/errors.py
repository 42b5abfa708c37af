"""Exceptions with messages meant for the person at the keyboard, not for a traceback reader."""

from __future__ import annotations


class RecommenderError(Exception):
    """Base class: the CLI and the app print these as plain messages."""


class CatalogError(RecommenderError):
    """The catalog file or table cannot be used as it is."""


class ImageError(RecommenderError):
    """An image cannot be read: missing, not an image, corrupt, or too large."""


class WeightsUnavailableError(RecommenderError):
    """The weights of a backbone are not on this machine and cannot be downloaded."""


class QueryError(RecommenderError):
    """A recommendation request is incomplete or names something that does not exist."""


class CacheError(RecommenderError):
    """The embedding cache cannot be used as asked: a file instead of a folder, not writable, disk full,
    or locked by another build for too long."""


class WeightsFileError(RecommenderError, ValueError):
    """A weights file is malformed, truncated, hostile or too large to read (also a ValueError, as the
    reader always documented)."""
