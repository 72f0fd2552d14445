"""A user's local pretrained text encoder, frozen, whose sentence embedding joins the TF-IDF row.

No pretrained weights can be downloaded where xmc is built, but users have them: a Hugging Face
model folder (``config.json``, ``model.safetensors``, the tokenizer files), or a
sentence-transformers folder (the same at its top level, plus ``1_Pooling/config.json``).
``xmc featurize --text-encoder FOLDER`` embeds each document with it (token states pooled by the
folder's pooling, mean by default, then unit-norm) and appends the embedding to the document's
TF-IDF row as ``dim`` extra feature columns. Everything downstream reads them unchanged: the
label tree's linear rankers (PECOS's XR-Transformer feeds its rankers the same concatenation),
and PRIME's encoder, whose embedding bag over those columns is a learnt projection of the
pretrained embedding, for documents and label names alike.

Why frozen: fine-tuning a transformer on every document for every epoch is out of reach of the
CPU machines the product is built on; a frozen encoder costs one forward pass per document at
featurization and at prediction.

Only what prediction needs is copied into the bundle (``vectorizer/encoder/``), where the
manifest checksums it. Weights load from safetensors only: a folder that holds its weights only
as a pickle (``pytorch_model.bin``) is refused, as is remote code.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xmc.errors import BundleError, DataFormatError, ParamError

FORMAT = "xmc-text-encoder"
SCHEMA_VERSION = 1
META = "encoder.json"
POOLING_CONFIG = "1_Pooling/config.json"
POOLINGS = ("mean", "cls")
# pickled formats a model folder may also hold: never copied, never read
PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# large alternative exports of the same weights: not needed, not copied
SKIPPED = (".onnx", ".h5", ".msgpack", ".ot", ".gguf")


def require_transformers() -> Any:
    """The ``transformers`` module, or a clear error naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ParamError("text_encoder needs the Hugging Face transformers library: "
                         "pip install 'xmc[text]'") from None
    transformers.logging.set_verbosity_error()  # no load reports or bars on every worker
    transformers.logging.disable_progress_bar()
    return transformers


def _pooling_of(folder: Path) -> str:
    """The sentence-transformers pooling of a folder ('cls' or 'mean'), mean where none is given."""
    config = folder / POOLING_CONFIG
    if not config.is_file():
        return "mean"
    try:
        meta = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise DataFormatError(f"unreadable pooling config ({e})", path=config) from None
    if meta.get("pooling_mode_cls_token"):
        return "cls"
    if meta.get("pooling_mode_mean_tokens", True):
        return "mean"
    raise DataFormatError("only CLS or mean pooling is supported", path=config, field="pooling_mode_*")


@dataclass
class TextEncoder:
    """A frozen transformer and its tokenizer in ``folder``: texts -> unit embeddings (N x dim)."""

    folder: Path
    pooling: str = "mean"
    max_length: int = 128
    dim: int = 0
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_pretrained(cls, source: str | Path, max_length: int) -> TextEncoder:
        """Check a user's model folder and open it (the checks run before any Spark work)."""
        folder = Path(source)
        if not folder.is_dir():
            raise DataFormatError("no such model folder (a Hugging Face or sentence-transformers "
                                  "folder with config.json and model.safetensors)", path=folder)
        if not (folder / "config.json").is_file():
            raise DataFormatError("not a Hugging Face model folder: no config.json", path=folder)
        if not any(folder.glob("*.safetensors")):
            pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
            hint = (f" (it holds {', '.join(pickled)}: pickled weights, which xmc never loads; save them "
                    "with model.save_pretrained(folder, safe_serialization=True))" if pickled else "")
            raise DataFormatError(f"no model.safetensors{hint}", path=folder)
        encoder = cls(folder, _pooling_of(folder), max_length)
        encoder.dim = int(encoder.model().config.hidden_size)
        return encoder

    def model(self) -> Any:
        """The transformer, loaded once, in eval mode (no dropout: the embedding is a function)."""
        if self._model is None:
            transformers = require_transformers()
            try:
                self._model = transformers.AutoModel.from_pretrained(
                    self.folder, local_files_only=True, use_safetensors=True, trust_remote_code=False)
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    self.folder, local_files_only=True, trust_remote_code=False)
            except (OSError, ValueError, KeyError) as e:
                raise DataFormatError(f"cannot load the text encoder: {e}", path=self.folder) from None
            self._model.eval()
            width = int(self._model.config.hidden_size)
            if self.dim and width != self.dim:
                raise BundleError(f"{self.folder}: the model is {width} wide, {META} says {self.dim}")
        return self._model

    def length(self) -> int:
        """Tokens read per text: ``max_length``, capped by the positions the model has (and the
        tokenizer's own limit), so a long ``max_length`` cannot index past them."""
        limits = [self.max_length, getattr(self.model().config, "max_position_embeddings", None),
                  getattr(self._tokenizer, "model_max_length", None)]
        return min(int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit embeddings (N x dim) float32, in the order of ``texts``. Texts are batched by length
        (less padding); padded positions are masked out of the mean."""
        import torch

        model = self.model()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.no_grad():
            for a in range(0, len(texts), batch_size):
                rows = order[a:a + batch_size]
                batch = self._tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                        max_length=self.length(), return_tensors="pt")
                states = model(**batch).last_hidden_state
                if self.pooling == "cls":
                    pooled = states[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out[rows] = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
        return out

    def save(self, folder: str | Path) -> None:
        """Copy what prediction needs (config, safetensors, tokenizer, pooling), write ``encoder.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for f in sorted(self.folder.iterdir()):
            if f.is_file() and f.suffix not in PICKLES + SKIPPED and f.name != META:
                shutil.copy2(f, folder / f.name)
        if (self.folder / POOLING_CONFIG).is_file():
            (folder / POOLING_CONFIG).parent.mkdir(exist_ok=True)
            shutil.copy2(self.folder / POOLING_CONFIG, folder / POOLING_CONFIG)
        meta = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "pooling": self.pooling,
                "max_length": self.max_length, "dim": self.dim, "source": str(self.folder),
                "normalization": "l2"}
        (folder / META).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> TextEncoder:
        """The encoder a bundle saved (its files were checked by the bundle's manifest)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"{folder / META}: unreadable text encoder description ({e})") from None
        if (not isinstance(meta, dict) or meta.get("format") != FORMAT
                or meta.get("schema_version") != SCHEMA_VERSION or meta.get("pooling") not in POOLINGS
                or not isinstance(meta.get("dim"), int) or not isinstance(meta.get("max_length"), int)):
            raise BundleError(f"{folder / META}: not an {FORMAT} v{SCHEMA_VERSION} file")
        return cls(folder, meta["pooling"], meta["max_length"], meta["dim"])


@functools.lru_cache(maxsize=2)
def cached(folder: str, threads: int = 1) -> TextEncoder:
    """One loaded encoder per folder and process: Spark's Python workers embed many batches with it,
    each task on ``threads`` torch threads (a task holds one core)."""
    import torch

    torch.set_num_threads(threads)
    return TextEncoder.load(folder)
