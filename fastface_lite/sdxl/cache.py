"""Where built artefacts are kept: the CLIP tokenizer files and the tiny adapter checkpoints.

`$FASTFACE_LITE_CACHE`, else `$XDG_CACHE_HOME/fastface_lite`, else `~/.cache/fastface_lite`. Entries
are named by a hash of what they contain (:func:`content_key`), so a stale entry is never reused,
and written atomically (:func:`write_atomic`), so concurrent writers agree and readers never see
half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """Folder for built artefacts: $FASTFACE_LITE_CACHE, $XDG_CACHE_HOME/fastface_lite or ~/.cache/fastface_lite."""
    if os.environ.get("FASTFACE_LITE_CACHE"):
        return Path(os.environ["FASTFACE_LITE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "fastface_lite"


def content_key(*parts) -> str:
    """A short hash of `parts` (any JSON-able values): the name of a cache entry built from them."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` so readers never see a half-written file (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
