"""The one error type data readers raise for bad input."""

from edge_sam.errors import EdgeSamError


class DatasetError(EdgeSamError, ValueError):
    """A dataset that cannot be read; the message names the file and what is wrong with it."""
