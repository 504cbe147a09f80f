"""Precision sweep: what reading MiniLM's weights at k of B bits costs in accuracy, and saves in traffic.

What is quantized: the 36 encoder weight matrices (6 layers x query, key, value, attention output, FFN in,
FFN out; 10.6 M weights), the ones a device streams for every forward. Embedding tables (looked up a row at a
time), biases and LayerNorm parameters stay FP32. Each matrix is stored in a format (quant.STORAGE_FORMATS) and
read back at every precision k in 1..B under a read rule (floor / midpoint fill as the device does, the
candidate toward-zero fill, or round-to-nearest for comparison; see workloads/quant.py). For each (format, rule, k):
- per-matrix SNR in dB of the weights read at k against the FP32 weights (so k = B shows the storage format's
  own quantization error); the table gives the mean and the minimum over the 36 matrices;
- layer-output cosine: each layer run on its cached FP32 input with all six of its matrices read at k, cosine
  of every real token's output vector with the FP32 layer output; mean and minimum over layers and tokens;
- sentence-embedding cosine: the whole model with every matrix read at k against the FP32 embeddings of
  the fixed SENTENCES; mean and minimum over sentences;
- correction: whether the per-row bias correction (workloads/quant.py: + row mean of W_B - W_k, computed from the
  stored codes) is applied to the weights read at k;
- bytes fetched: weights x k bits / 8 (the device reads k of B planes), and that as a fraction of B. Host-kept
  INT scales are not fetched from the device and not counted (`scale_bytes` gives their size at FP16).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
import math
import os
from pathlib import Path
import sys

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.workloads import quant
from smartquant.workloads.minilm import MiniLM, TokenBatch, cosine, load_minilm, single_blas_thread
from smartquant.tables import text_table

# fixed evaluation sentences: different lengths, topics and punctuation
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Memory bandwidth, not arithmetic, limits how fast a small language model can generate text.",
    "She sold her bicycle and bought a train ticket to the mountains.",
    "What is the capital of Australia?",
    "Bit-plane storage lets the memory controller return only the most significant bits of every weight.",
    "Rain is expected tomorrow afternoon, so the football match may be postponed.",
)

COLUMNS = ("format", "rule", "correction", "B", "k", "k_over_B", "bytes_fetched", "scale_bytes", "snr_db_mean",
           "snr_db_min", "layer_cos_mean", "layer_cos_min", "embedding_cos_mean", "embedding_cos_min")


def progress_bar(iterable, total: int | None = None, description: str = "", enabled: bool = True):
    """tqdm on stderr (so tables on stdout stay clean); a plain iterable when disabled."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=description, file=sys.stderr, leave=False)


@dataclass
class SweepContext:
    """Everything a sweep point reuses: the model, the token batch and the FP32 activations of every layer."""
    model: MiniLM
    batch: TokenBatch
    states: list                    # FP32 [embedding output, layer 0 output, ...] (n, T, H)
    embeddings: np.ndarray          # FP32 sentence embeddings (n, H)
    names: list                     # the 36 swept matrix names
    _stored: dict = field(default_factory=dict)
    _signal_power: dict = field(default_factory=dict)

    def stored(self, fmt_name: str) -> dict:
        """name -> quant.StoredMatrix for one format (quantized once, then cached)."""
        if fmt_name not in self._stored:
            fmt = quant.storage_format(fmt_name)
            self._stored[fmt_name] = {name: quant.StoredMatrix(self.model.weights[name], fmt) for name in self.names}
        return self._stored[fmt_name]

    def read_all(self, fmt_name: str, precision_k: int | None, rule: str, corrected: bool = False) -> dict:
        """name -> float32 weights of every swept matrix as read at precision k under a rule (and corrected)."""
        return {name: stored.read(precision_k, rule, corrected) for name, stored in self.stored(fmt_name).items()}

    def signal_power(self, name: str) -> float:
        if name not in self._signal_power:
            weights = self.model.weights[name].reshape(-1)
            self._signal_power[name] = float(np.dot(weights.astype(np.float64), weights))
        return self._signal_power[name]

    def n_weights(self) -> int:
        return sum(self.model.weights[name].size for name in self.names)

    def layers(self) -> list:
        """Encoder layers that have swept matrices."""
        return sorted({int(name.split(".")[2]) for name in self.names})


def prepare(sentences=SENTENCES, model: MiniLM | None = None, layers=None) -> SweepContext:
    """Tokenise the sentences and cache the FP32 activations the sweep compares against.

    layers: the encoder layers whose matrices are swept (default all); the others stay FP32 (quick tests).
    """
    model = load_minilm() if model is None else model
    layers = range(model.n_layers) if layers is None else layers
    if not all(0 <= layer < model.n_layers for layer in layers) or not len(layers):
        raise SmartquantError(f"layers must be a non-empty subset of 0..{model.n_layers - 1}, got {list(layers)}")
    batch = model.tokenize(list(sentences))
    states = model.hidden_states(batch)
    embeddings = model.pool(states[-1], batch.attention_mask)
    names = [name for name in model.linear_weight_names() if int(name.split(".")[2]) in set(layers)]
    return SweepContext(model, batch, states, embeddings, names)


def token_cosines(output: np.ndarray, reference: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Cosine of each real (unpadded) token's hidden vector."""
    return cosine(output, reference)[attention_mask > 0]


def bytes_fetched(n_weights: int, precision_k: int) -> int:
    """Bytes the device reads for n weights at k bits (k planes of n bits; n is whole bytes for MiniLM)."""
    return n_weights * precision_k // 8


def sweep_point(context: SweepContext, fmt_name: str, precision_k: int, rule: str, corrected: bool = False) -> dict:
    """One row of the sweep table (see the module docstring for the definitions)."""
    fmt = quant.storage_format(fmt_name)
    weights = context.read_all(fmt_name, precision_k, rule, corrected)
    snrs = np.array([quant.snr_db(context.model.weights[name], weights[name], context.signal_power(name))
                     for name in context.names])
    mask = context.batch.attention_mask
    layer_cosines = [token_cosines(context.model.layer(layer, context.states[layer], mask, weights),
                                   context.states[layer + 1], mask)
                     for layer in context.layers()]
    layer_mean = float(np.mean([c.mean() for c in layer_cosines]))
    layer_min = float(min(c.min() for c in layer_cosines))
    embeddings = context.model.pool(context.model.hidden_states(context.batch, weights)[-1], mask)
    embedding_cosines = cosine(embeddings, context.embeddings)
    n_weights = context.n_weights()
    n_scales = sum(stored.quantized.scales.size
                   for stored in context.stored(fmt_name).values() if stored.quantized is not None)
    return {
        "format": fmt_name, "rule": rule, "correction": bool(corrected), "B": fmt.bits, "k": precision_k,
        "k_over_B": precision_k / fmt.bits,
        "bytes_fetched": bytes_fetched(n_weights, precision_k),
        "scale_bytes": 2 * n_scales,
        "snr_db_mean": float(np.mean(snrs)), "snr_db_min": float(np.min(snrs)),
        "layer_cos_mean": layer_mean, "layer_cos_min": layer_min,
        "embedding_cos_mean": float(embedding_cosines.mean()), "embedding_cos_min": float(embedding_cosines.min()),
        "snr_db_per_matrix": dict(zip(context.names, snrs.tolist())),
    }


def parse_choices(value: str, allowed, what: str) -> list:
    """'a,b' or 'all' -> list of allowed names, in the order given."""
    names = list(allowed) if value == "all" else [v.strip() for v in value.split(",") if v.strip()]
    bad = [name for name in names if name not in allowed]
    if bad or not names:
        raise SmartquantError(f"{what} must be 'all' or a comma list of {', '.join(allowed)}, got {value!r}")
    return names


def run_sweep(formats=("int8", "int4", "bf16"), rules=quant.READ_RULES, ks: dict | None = None,
              context: SweepContext | None = None, progress: bool = True, corrections=(False,)) -> list:
    """Rows for every format x rule x k x correction (all k in 1..B unless ks[format] lists the k to run)."""
    for name in formats:
        quant.storage_format(name)
    for rule in rules:
        quant.check_rule(rule)
    context = prepare() if context is None else context
    points = []
    for name in formats:
        B = quant.STORAGE_FORMATS[name].bits
        chosen = range(1, B + 1) if ks is None or name not in ks else ks[name]
        points += [(name, rule, k, corrected) for rule in rules for corrected in corrections for k in chosen]
    with single_blas_thread():
        return [sweep_point(context, name, k, rule, corrected)
                for name, rule, k, corrected in progress_bar(points, len(points), "precision sweep", progress)]


def _cell(value, column: str) -> str:
    if column in ("format", "rule"):
        return str(value)
    if column == "correction":
        return "on" if value else "off"
    if column in ("B", "k"):
        return str(value)
    if column == "k_over_B":
        return f"{value:.3f}"
    if column in ("bytes_fetched", "scale_bytes"):
        return f"{value / 1e6:.2f}"
    if column.startswith("snr"):
        return "inf" if math.isinf(value) and value > 0 else f"{value:.1f}"
    return f"{value:.5f}"


TABLE_HEADERS = {"correction": "corr", "bytes_fetched": "MB fetched", "scale_bytes": "scale MB", "k_over_B": "k/B",
                 "snr_db_mean": "SNR dB mean", "snr_db_min": "SNR dB min", "layer_cos_mean": "layer cos",
                 "layer_cos_min": "layer cos min", "embedding_cos_mean": "emb cos", "embedding_cos_min": "emb cos min"}


def format_table(rows, columns=COLUMNS) -> str:
    """Plain-text aligned table (text columns left, numbers right); no correction column when it is off in
    every row (the default sweep)."""
    if not any(row.get("correction") for row in rows):
        columns = tuple(c for c in columns if c != "correction")
    headers = [TABLE_HEADERS.get(c, c) for c in columns]
    cells = [[_cell(row[c], c) for c in columns] for row in rows]
    return text_table(headers, cells, left={i for i, c in enumerate(columns) if c in ("format", "rule", "correction")})


def pivot_table(rows, metric: str, cell) -> str:
    """One line per (format, k), one column per rule x correction (raw / +corr): `cell(row[metric])`."""
    rules = list(dict.fromkeys(r["rule"] for r in rows))
    corrections = sorted({bool(r.get("correction")) for r in rows})
    columns = [(rule, c) for rule in rules for c in corrections]
    lines = {}
    for r in rows:
        lines.setdefault((r["format"], r["k"]), {})[(r["rule"], bool(r.get("correction")))] = r
    headers = ["format", "k", "MB fetched"] + [f"{rule} {'+corr' if c else 'raw'}" for rule, c in columns]
    cells = []
    for (name, k), by_column in lines.items():
        first = next(iter(by_column.values()))
        cells.append([name, str(k), f"{first['bytes_fetched'] / 1e6:.1f}"]
                     + [cell(by_column[col][metric]) if col in by_column else "-" for col in columns])
    return text_table(headers, cells, left={0})


def check_csv_path(path) -> None:
    """Fail before a long run, not after it, when the CSV file cannot be written."""
    directory = Path(path).resolve().parent
    if not directory.is_dir():
        raise SmartquantError(f"cannot write CSV file {path}: directory {directory} does not exist")
    if Path(path).is_dir() or not os.access(directory, os.W_OK):
        raise SmartquantError(f"cannot write CSV file {path}: not a writable file path")


def write_csv(rows, path, columns=COLUMNS) -> None:
    """The sweep rows as CSV (one line per format x rule x k; per-matrix SNR is left to the dict)."""
    try:
        with open(Path(path), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    except OSError as error:
        raise SmartquantError(f"cannot write CSV file {path}: {error.strerror}") from None
