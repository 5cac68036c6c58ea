"""Every error the package raises on a user's input. Each message names the input and what to do.

Catch :class:`FastFaceError` to catch any of them; the CLI turns them into a one-line message and
exit code 2. Anything else escaping the package is a bug and keeps its traceback.
"""


class FastFaceError(Exception):
    """Base class of the package's own errors about a user's input."""


class ConfigError(FastFaceError, ValueError):
    """A FastFace configuration that cannot run: wrong names, types, lengths or ranges."""


class NothingRecorded(FastFaceError, LookupError):
    """A trace query asked for maps that were never recorded (a branch a step did not evaluate,
    a block or step outside what the trace was told to keep)."""


class FaceError(FastFaceError, ValueError):
    """An input image that cannot give a face (unreadable, too small, no face)."""


class UnreadableImageError(FaceError):
    """The input is not an image we can read: a missing file, a corrupt file, a non-image."""


class ImageTooSmallError(FaceError):
    """The image is too small to hold a detectable face."""


class NoFaceError(FaceError):
    """The image was read but no face was detected in it."""


class RunFolderError(FastFaceError, ValueError):
    """An evaluation run folder that cannot be used as asked: it holds something else, holds a run
    and neither --resume nor --overwrite was given, was started with other settings, or another
    command is writing it right now."""
