"""Drop one transformers note that no user of this package can act on; every other one shows.

With torchvision absent, transformers 5 logs "`CLIPImageProcessor` requires torchvision (not
installed); falling back to `CLIPImageProcessorPil` ... Install torchvision ..." the first time
anything names an image processor. diffusers names CLIP's and SigLIP's while its SDXL pipeline
and IP-adapter loader import, so everyone importing `fastface_lite.sdxl` would read it. Here the
advice does not apply: the package builds its CLIP processor as `CLIPImageProcessorPil` itself
(the same crops with or without torchvision), and the lock leaves torchvision out because PyPI's
torchvision does not load beside the CPU torch wheel. The filter sits on the one transformers
logger that emits the note and matches only that sentence.
"""

from __future__ import annotations

import logging
import re

# the logger transformers' lazy import module logs through (transformers/utils/import_utils.py)
LOGGER_NAME = "transformers.utils.import_utils"
_NOTE = re.compile(
    r"`\w+ImageProcessor` requires torchvision \(not installed\); "
    r"falling back to `\w+ImageProcessorPil`"
)


class TorchvisionFallbackFilter(logging.Filter):
    """Rejects the torchvision fallback note, passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _NOTE.match(record.getMessage()) is None


def drop_torchvision_fallback_note() -> None:
    """Attach the filter to transformers' import logger (once; safe before transformers is imported)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(f, TorchvisionFallbackFilter) for f in logger.filters):
        logger.addFilter(TorchvisionFallbackFilter())
