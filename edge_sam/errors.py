"""User-facing errors.

Every error a user can cause (a wrong checkpoint, an unreadable image, a prompt outside the
image, a missing toolchain) is an :class:`EdgeSamError` with a one-line message. The CLI prints
the message and exits non-zero without a traceback; library users can catch one type.
"""


class EdgeSamError(Exception):
    """One-line, user-facing error; the CLI prints it without a traceback."""


class CheckpointError(EdgeSamError, ValueError):
    """A checkpoint that cannot be read or does not match the architecture."""


class PromptError(EdgeSamError, ValueError):
    """A prompt the model cannot take (too many slots, outside the image, bad label)."""


class ImageError(EdgeSamError, ValueError):
    """An image that cannot be read or has the wrong shape or dtype."""


class MissingToolchainError(EdgeSamError, ImportError):
    """An optional toolchain is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional toolchain module or raise one line naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingToolchainError(
            f"{module} is not installed: pip install 'edge-sam[{extra}]' ({exc})"
        ) from None
