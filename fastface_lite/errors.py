"""Every error the package raises on a user's input. Each message names the input and what to do.

Catch :class:`FastFaceError` to catch any of them; the CLI turns them into a one-line message and
exit code 2. Anything else escaping the package is a bug and keeps its traceback.
"""


class FastFaceError(Exception):
    """Base class of the package's own errors about a user's input."""


class ConfigError(FastFaceError, ValueError):
    """A FastFace configuration that cannot run: wrong names, types, lengths or ranges."""


class InputError(FastFaceError, ValueError):
    """A call's input that cannot be used: a tensor of the wrong shape, dtype or range, a value
    that is not finite, an option that is not known."""


class MissingFileError(FastFaceError, FileNotFoundError):
    """A file the user named (a photo, a prompt file) that does not exist."""


class WeightsUnavailable(FastFaceError, OSError):
    """Model weights that are neither on disk nor downloadable (offline, or no network): full
    mode needs them; tiny mode runs offline. An OSError, as the hub clients' own "not in the
    cache" errors are."""


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


def user_error(command: str, err: BaseException) -> str:
    """How the `fastface` command line reports a user error: ``fastface COMMAND: error: MESSAGE``,
    the message as raised (a multi-line one, such as the list of settings that differ, is kept
    whole), without the traceback."""
    return f"fastface {command}: error: {err}"
