"""A Hugging Face tokenizer (``tokenizer.json``, read with the ``tokenizers`` package, offline) in
dlm_jax's tokenizer interface, so an imported checkpoint samples and evaluates with its own tokenizer.

dlm_jax's id order puts the mask last: clean ids ``0..V-1``, mask ``V``. A checkpoint whose model has
``n`` ids with the mask at ``m`` (MDLM-OWT: n = 50,258, m = n − 1 = 50,257 on GPT-2's 50,257 tokens;
LLaDA: n = 126,464, m = 126,336 inside a padded vocabulary) gives V = n − 1, and token ids above ``m``
shift down by one (``models.llada.checkpoint_to_dlm_ids``); a tokenizer with no model beside it has
V = its size and the mask at V. The model's ``n`` and ``m`` come from ``dlm_jax_vocab.json`` (written
by ``copy_hf_tokenizer`` at import) or the folder's ``config.json`` (``vocab_size``,
``mask_token_id``). Special ids come from ``tokenizer_config.json`` / ``special_tokens_map.json``
(token strings) or ``config.json`` (``*_token_id``); a tokenizer without a pad token pads with EOS
(as GPT-2 users do), without a BOS starts with EOS.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Sequence

import numpy as np

from dlm_jax.checks import fail

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VOCAB_FILE = "dlm_jax_vocab.json"


def is_hf_tokenizer_path(path: str) -> bool:
    """A ``tokenizer.json`` file, or a folder holding one."""
    return bool(path) and (os.path.basename(path) == "tokenizer.json" and os.path.isfile(path)
                           or os.path.isfile(os.path.join(path, "tokenizer.json")))


def _json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError) as e:
        fail("data.tokenizer_path", path, f"a readable JSON file ({type(e).__name__})")
    return out if isinstance(out, dict) else {}


def _token_str(value) -> str | None:
    if isinstance(value, dict):  # {"content": "<|endoftext|>", ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


class HFTokenizer:
    """``tokenizer.json`` + the model's id layout. ``encode``/``decode`` on one string or a batch."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer

        folder = path if os.path.isdir(path) else os.path.dirname(path)
        if not is_hf_tokenizer_path(path):
            fail("data.tokenizer_path", path, "a tokenizer.json file or a folder holding one")
        self.path = path
        self._tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        size = int(self._tok.get_vocab_size(with_added_tokens=True))
        model = _json(os.path.join(folder, VOCAB_FILE)) or _json(os.path.join(folder, "config.json"))
        n = int(model.get("num_ids", model.get("vocab_size", size + 1)))
        if n < size + (0 if "mask_token_id" in model else 1):
            fail("data.tokenizer_path", path, f"a model with room for the tokenizer's {size} tokens (its ids: {n})")
        self.checkpoint_mask_id = int(model.get("mask_token_id", n - 1))
        if not 0 <= self.checkpoint_mask_id < n:
            fail("mask_token_id", self.checkpoint_mask_id, f"an id in [0, {n})")
        self._v = n - 1
        specials = {**_json(os.path.join(folder, "special_tokens_map.json")),
                    **_json(os.path.join(folder, "tokenizer_config.json"))}

        def special(name: str) -> int | None:
            token = _token_str(specials.get(f"{name}_token"))
            tid = self._tok.token_to_id(token) if token is not None else model.get(f"{name}_token_id")
            return None if tid is None else self._to_dlm(int(tid))

        self.eos_id = special("eos")
        if self.eos_id is None:
            fail("data.tokenizer_path", path, "a tokenizer with an EOS token (eos_token in tokenizer_config.json or "
                 "eos_token_id in config.json)")
        pad = special("pad")
        self.pad_id = pad if pad is not None else self.eos_id
        bos = special("bos")
        self.bos_id = bos if bos is not None else self.eos_id
        self.unk_id = special("unk")

    def __getstate__(self):  # picklable for grain worker processes
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _to_dlm(self, ids):
        ids = np.asarray(ids, np.int64)
        m = self.checkpoint_mask_id
        return np.where(ids > m, ids - 1, ids) if m != self._v else ids

    def _to_checkpoint(self, ids):
        ids = np.asarray(ids, np.int64)
        m = self.checkpoint_mask_id
        return np.where(ids >= m, ids + 1, ids) if m != self._v else ids

    @property
    def vocab_size(self) -> int:
        """Number of clean classes V (the model's ids less its mask)."""
        return self._v

    @property
    def input_vocab_size(self) -> int:
        return self._v + 1

    mask_id = property(lambda self: self._v, doc="The mask id in dlm_jax order, V.")

    def encode(self, text: str | Sequence[str]) -> np.ndarray | list[np.ndarray]:
        """One string -> int32 ids ``[n]`` (dlm_jax order, no special tokens added); a list -> a list."""
        if isinstance(text, str):
            return self._to_dlm(self._tok.encode(text, add_special_tokens=False).ids).astype(np.int32)
        return [self._to_dlm(e.ids).astype(np.int32) for e in self._tok.encode_batch(list(text),
                                                                                       add_special_tokens=False)]

    def decode(self, ids) -> str | list[str]:
        """Ids ``[n]`` -> string; ``[B, n]`` -> list of strings. Pad, mask and special tokens are dropped."""
        arr = ids if isinstance(ids, list) and ids and not np.isscalar(ids[0]) else np.asarray(ids)
        if isinstance(arr, np.ndarray) and arr.ndim == 1:
            return self._decode_row(arr)
        return [self._decode_row(np.asarray(row)) for row in arr]

    def _decode_row(self, row: np.ndarray) -> str:
        row = np.asarray(row, np.int64)
        keep = row[(row >= 0) & (row < self._v) & (row != self.pad_id)]
        return self._tok.decode(self._to_checkpoint(keep).tolist(), skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        return self._tok.id_to_token(int(self._to_checkpoint([int(i)])[0]))


def copy_hf_tokenizer(src_dir: str, dst_dir: str, *, num_ids: int, mask_token_id: int) -> str | None:
    """Copy a checkpoint folder's tokenizer files into ``dst_dir`` with the model's id layout
    (``dlm_jax_vocab.json``); returns ``dst_dir``, or None when ``src_dir`` has no tokenizer.json."""
    if not os.path.isfile(os.path.join(src_dir, "tokenizer.json")):
        return None
    os.makedirs(dst_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src_dir, name)):
            shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
    config = _json(os.path.join(src_dir, "config.json"))
    layout = {"num_ids": int(num_ids), "mask_token_id": int(mask_token_id)}
    layout.update({k: config[k] for k in ("eos_token_id", "bos_token_id", "pad_token_id") if k in config})
    with open(os.path.join(dst_dir, VOCAB_FILE), "w") as f:
        json.dump(layout, f, indent=1)
    return dst_dir
