"""The real CLIP BPE tokenizer, built offline.

SDXL's two tokenizers are OpenAI CLIP's byte-level BPE (49408 tokens). The `open_clip_torch` wheel
ships the merge list CLIP was built from (`bpe_simple_vocab_16e6.txt.gz`); from it we rebuild the
`vocab.json` + `merges.txt` pair that Hugging Face's `CLIPTokenizer` reads, so prompts tokenize to
exactly the ids the real SDXL text encoders see, with no download.

We only *read* the file: importing `open_clip` pulls in torchvision, which breaks beside our CPU
torch, so the wheel is located with `importlib.util.find_spec` (that does not run its `__init__`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

from transformers import CLIPTokenizer

from fastface_lite.sdxl.cache import write_atomic

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte tokens + 256 "</w>" byte tokens + merges
# + 2 special tokens = 49408 entries, the text encoders' vocab_size.
NUM_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 77


def bpe_vocab_path() -> Path:
    """Path of the CLIP merge list inside the installed `open_clip_torch` wheel (never imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open_clip_torch is not installed; it ships the CLIP BPE file "
            f"{BPE_FILE_NAME}. Install it with `pip install open_clip_torch --no-deps`."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BPE_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the open_clip_torch install; reinstall it.")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character map of byte-level BPE.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, ...) map to
    characters from U+0100 on, in byte order, so every byte has a visible, whitespace-free symbol.
    The dict's insertion order (printable bytes first) is the order of CLIP's first 256 tokens.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@cache
def clip_vocab_and_merges(bpe_path: str | None = None) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """CLIP's token list (index = id) and merge list, rebuilt from the open_clip merge file.

    Returns (tokens, merges): 49408 tokens and 48894 merge pairs.
    """
    lines = gzip.open(bpe_path or bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : NUM_MERGES + 1])  # line 0 is a version header
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges] + [BOS, EOS]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise ValueError(f"{bpe_path or bpe_vocab_path()} does not give CLIP's {VOCAB_SIZE} distinct tokens.")
    return tuple(tokens), merges


def write_tokenizer_files(folder: Path) -> Path:
    """Write `vocab.json` and `merges.txt` (the Hugging Face CLIP format) into `folder`.

    The folder is named by the caller; files already there are reused, so this is cheap after the
    first call. Returns `folder`.
    """
    folder = Path(folder)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    if vocab_path.is_file() and merges_path.is_file():
        return folder
    tokens, merges = clip_vocab_and_merges()
    vocab = {token: i for i, token in enumerate(tokens)}
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    write_atomic(vocab_path, json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    write_atomic(merges_path, merges_text.encode("utf-8"))
    return folder


def bpe_fingerprint() -> str:
    """Short content hash of the merge file, to key on-disk caches of what is built from it."""
    return hashlib.sha256(bpe_vocab_path().read_bytes()).hexdigest()[:16]


def sdxl_tokenizers(folder: Path) -> tuple[CLIPTokenizer, CLIPTokenizer]:
    """SDXL's two tokenizers, read from the `vocab.json` + `merges.txt` in `folder` (written if
    missing). Both: the same BPE, 77 tokens. The first pads with `<|endoftext|>`; the second
    (OpenCLIP ViT-bigG's) pads with "!" (id 0), as in `stable-diffusion-xl-base-1.0`."""
    folder = write_tokenizer_files(folder)
    common = dict(model_max_length=MODEL_MAX_LENGTH, local_files_only=True)
    return (
        CLIPTokenizer.from_pretrained(folder, pad_token=EOS, **common),
        CLIPTokenizer.from_pretrained(folder, pad_token="!", **common),
    )
