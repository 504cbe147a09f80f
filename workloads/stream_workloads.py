"""The two workloads the streaming demo runs through the device, behind one interface, and SmolLM2's schedule.

A workload (used by workloads/streaming.py `forward_with` and sim/stream_demo.py) has:
- `name`, `model`, `inputs` (what the forward runs on), `tokens()`;
- `layer_matrices(layers)`: {layer: {matrix name: float weights}} to place in the device;
- `forward(inputs, select_weight)`: {output name: array}, the arrays that must equal the golden run bit for bit;
- `resident_weight(name, choose, x)`: the weight of a matrix that is not streamed;
- `score(outputs)`: the accuracy figures of a run; `reference()`: the same for the unquantized model;
- `begin_run()`: called before each schedule (drops per-schedule caches).

MiniLMWorkload: all-MiniLM-L6-v2 on the six demo sentences, scored by sentence-embedding cosine to FP32; the
matrices not streamed stay FP32 (one layer at k, the others exact).
SmolLM2Workload: SmolLM2-135M-Instruct on 4 windows of 256 tokens of lee.cor, scored by perplexity; every linear
matrix is stored INT8 per-channel and read at the schedule's k with the generative model's default read (the
toward-zero fill with the per-row bias correction, workloads/llm_sweep.py DEFAULT_RULE / DEFAULT_CORRECTION);
the matrices not streamed are read by the golden model (quant.StoredMatrix.read), so the perplexity is that of
the whole model at the schedule, with the streamed layers' weights coming from the RTL.

`smollm2_layer_precisions` is the one place the SmolLM2 per-matrix precision comes from (see its docstring).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from smartquant.errors import SmartquantError
from smartquant.workloads import quant


class MiniLMWorkload:
    name = "minilm"
    default_rule = "floor"
    default_corrected = False
    default_R = 1

    def __init__(self, model=None, sentences=None):
        from smartquant.workloads.minilm import load_minilm
        from smartquant.workloads.sweep import SENTENCES
        self.model = load_minilm() if model is None else model
        self.inputs = self.model.tokenize(list(sentences or SENTENCES))
        self._reference = None

    @property
    def n_layers(self) -> int:
        return self.model.n_layers

    def tokens(self) -> int:
        return int(self.inputs.attention_mask.sum())

    def layer_matrices(self, layers, shorts=None) -> dict:
        """{layer: {name: FP32 weights}} of the six encoder matrices (or the `shorts` among them) per layer."""
        from smartquant.workloads.minilm import LAYER_MATRICES, matrix_name
        return pick_matrices(self.model.weights, layers, self.n_layers, list(LAYER_MATRICES), matrix_name, shorts)

    def begin_run(self) -> None:
        pass

    def resident_weight(self, name, choose, x) -> np.ndarray:
        return self.model.weights[name]

    def forward(self, inputs, select_weight) -> dict:
        states = self.model.hidden_states(inputs, select_weight=select_weight)
        outputs = {f"layer {index} output": state for index, state in enumerate(states[1:])}
        outputs["embeddings"] = self.model.pool(states[-1], inputs.attention_mask)
        return outputs

    def reference(self) -> dict:
        if self._reference is None:
            self._reference = self.model.pool(self.model.hidden_states(self.inputs)[-1], self.inputs.attention_mask)
        return {"embeddings": self._reference}

    def score(self, outputs) -> dict:
        from smartquant.workloads.minilm import cosine
        cosines = cosine(outputs["embeddings"], self.reference()["embeddings"])
        return {"embedding_cos_mean": float(cosines.mean()), "embedding_cos_min": float(cosines.min())}


class SmolLM2Workload:
    name = "smollm2"
    default_R = 64

    def __init__(self, model=None, fmt_name: str = "int8", n_windows: int = 4, window: int = 256):
        from smartquant.workloads import llm_sweep
        self.setup = llm_sweep.prepare(model, n_windows, window)
        self.model = self.setup.model
        self.inputs = self.setup.batch
        self.source = self.setup.source
        self.fmt = llm_sweep.llm_format(fmt_name)
        self.default_rule = llm_sweep.DEFAULT_RULE
        self.default_corrected = llm_sweep.DEFAULT_CORRECTION
        self.rule, self.corrected = self.default_rule, self.default_corrected
        self._stored: dict[str, quant.StoredMatrix] = {}
        self._reads: dict[tuple, np.ndarray] = {}
        self._reference = None

    def set_read(self, rule: str, corrected: bool) -> None:
        """The read of the resident matrices: the same as the streamed ones' (the plan's rule and correction)."""
        quant.check_rule(rule)
        self.rule, self.corrected = rule, bool(corrected)
        self._reads.clear()

    @property
    def n_layers(self) -> int:
        return self.model.config.n_layers

    def tokens(self) -> int:
        return self.setup.tokens

    def names(self) -> list:
        return self.model.linear_weight_names()

    def layer_matrices(self, layers, shorts=None) -> dict:
        """{layer: {name: weights}} of the seven decoder matrices (or the `shorts` among them) per layer."""
        from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name
        return pick_matrices(self.model.weights, layers, self.n_layers, list(LAYER_MATRICES), matrix_name, shorts)

    def begin_run(self) -> None:
        self._reads.clear()

    def resident_weight(self, name, choose, x) -> np.ndarray:
        """The golden model's read of a matrix that is not streamed, at the schedule's k (cached for one run:
        the RTL forward and the golden forward of a schedule share it)."""
        k = int(choose(name, x))
        key = (name, k)
        if key not in self._reads:
            if name not in self._stored:
                self._stored[name] = quant.StoredMatrix(self.model.weights[name], self.fmt)
            self._reads[key] = self._stored[name].read(k, self.rule, corrected=self.corrected)
        return self._reads[key]

    def forward(self, inputs, select_weight) -> dict:
        return {"token nll": self.model.token_nll(inputs, select_weight=select_weight)}

    def reference(self) -> dict:
        """The dequantized GGUF in float32 (the reference model), not stored or read at k."""
        if self._reference is None:
            self._reference = self.score({"token nll": self.model.token_nll(self.inputs)})
        return self._reference

    @staticmethod
    def score(outputs) -> dict:
        mean = float(np.mean(outputs["token nll"]))
        return {"perplexity": float(np.exp(mean)), "mean_nll": mean}


def pick_matrices(weights: dict, layers, n_layers: int, kinds: list, matrix_name, shorts=None) -> dict:
    """{layer: {name: weights}} of a model's matrix kinds (or the `shorts` among them, in model order)."""
    layers = check_layers(layers, n_layers)
    chosen = kinds if shorts is None else [s for s in kinds if s in set(shorts)]
    if not chosen or (shorts is not None and len(chosen) != len(set(shorts))):
        raise SmartquantError(f"matrices must be names among {', '.join(kinds)}, got {shorts!r}")
    return {layer: {matrix_name(layer, s): weights[matrix_name(layer, s)] for s in chosen} for layer in layers}


def check_layers(layers, n_layers: int) -> list:
    layers = [int(layer) for layer in layers]
    if not layers or len(set(layers)) != len(layers) or not all(0 <= layer < n_layers for layer in layers):
        raise SmartquantError(f"layers must be distinct indices in 0..{n_layers - 1}, got {list(layers)}")
    return layers


# --- SmolLM2 per-matrix precision ----------------------------------------------------------------------------
# Default k per matrix kind, the same in every layer: 5.78 bits per weight on average (INT8 storage, B = 8).
# From a per-kind sensitivity measured on the calibration text (lee_background.cor, 2 windows of 256 tokens,
# toward-zero + correction; `python -m smartquant.workloads.stream_workloads --sensitivity` prints it): all 30
# layers' matrices of one kind read at k = 5 or 4, everything else at reference precision (27.50). At k = 5:
# attn_q 27.45, attn_k 27.58, attn_output 28.56 (< 4 % worse), attn_v 30.66, ffn_gate 29.57, ffn_up 30.64,
# ffn_down 30.77 (7.5..12 % worse). Kinds that cost < 4 % at k = 5 go to 5, the rest to 6.
DEFAULT_KIND_K = {"attn_q": 5, "attn_k": 5, "attn_v": 6, "attn_output": 5, "ffn_gate": 6, "ffn_up": 6,
                  "ffn_down": 6}


def parse_kind_k(text: str) -> dict:
    """--smollm2-k: one k for every matrix ("6"), or per kind ("attn_q=5,ffn_down=7"; unnamed kinds keep the
    default)."""
    from smartquant.workloads.smollm2 import LAYER_MATRICES
    text = text.strip()
    try:
        if "=" not in text:
            return {kind: int(text) for kind in LAYER_MATRICES}
        kinds = dict(DEFAULT_KIND_K)
        for item in text.split(","):
            kind, value = (part.strip() for part in item.split("="))
            if kind not in LAYER_MATRICES:
                raise SmartquantError(f"--smollm2-k: matrix kind must be one of {', '.join(LAYER_MATRICES)}, "
                                      f"got {kind!r}")
            kinds[kind] = int(value)
        return kinds
    except ValueError:
        raise SmartquantError(f"--smollm2-k must be a k or a comma list kind=k, got {text!r}") from None


POLICY_BUDGET = 5.5       # bits per weight of the demo's per-matrix policy run


def policy_spec_default() -> str | None:
    """The demo's default per-matrix run: policy (a) of `smartquant golden llm-policy` at POLICY_BUDGET, when its
    result file is at its default place under the working directory (a clone has it, in docs/results/); else
    None, the per-kind assignment DEFAULT_KIND_K."""
    from smartquant.workloads.llm_policy import DEFAULT_OUT
    return f"policy:{POLICY_BUDGET:g}" if DEFAULT_OUT.exists() else None


def policy_precisions(spec: str, sizes: dict, B: int = 8) -> dict:
    """'policy:BUDGET[:FILE]': the per-matrix sensitivity policy (a) of issue 12 part 3, allocated at BUDGET bits
    per weight from the sensitivities (gains x noise per k) that `smartquant golden llm-policy` measured on the
    calibration text and wrote to FILE (default docs/results/llm_policy.json under the working directory): the
    same greedy allocation that command evaluates, so no probe is re-run."""
    from smartquant.workloads.llm_policy import DEFAULT_OUT
    from smartquant.workloads.policies import greedy_allocation
    parts = spec.split(":", 2)
    try:
        budget = float(parts[1])
    except (IndexError, ValueError):
        raise SmartquantError(f"--smollm2-k policy:BUDGET[:FILE] needs a number of bits per weight, got {spec!r}") \
            from None
    path = Path(parts[2]) if len(parts) == 3 else DEFAULT_OUT
    try:
        result = json.loads(path.read_text())
        weighted = {name: np.asarray(result["nsr"][name]) * result["gains"][name] for name in sizes}
        min_k = int(result["min_k"])
    except FileNotFoundError:
        raise SmartquantError(f"{path} not found: run `smartquant golden llm-policy` (it writes it) or give "
                              f"policy:BUDGET:FILE") from None
    except (KeyError, ValueError, TypeError) as error:
        raise SmartquantError(f"{path} is not an llm-policy result covering every matrix ({error})") from None
    return greedy_allocation(weighted, sizes, budget, B, min_k)


def smollm2_layer_precisions(model, spec: str | None = None, B: int = 8) -> dict:
    """{matrix name: k} for every linear matrix of SmolLM2: the precision policy the streaming demo runs.

    The one hook for a precision policy: 'policy:BUDGET[:FILE]' is part 3's fitted per-matrix policy
    (policy_precisions); a k or 'kind=k,...' a fixed per-kind assignment (DEFAULT_KIND_K for kinds not named);
    None the demo's default (policy_spec_default)."""
    from smartquant.golden import layout
    from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name
    names = [matrix_name(layer, kind) for layer in range(model.config.n_layers) for kind in LAYER_MATRICES]
    spec = policy_spec_default() if spec is None else spec
    if spec is not None and spec.strip().startswith("policy"):
        return policy_precisions(spec.strip(), {name: model.weights[name].size for name in names}, B)
    kinds = DEFAULT_KIND_K if spec is None else parse_kind_k(spec)
    for kind, k in kinds.items():
        layout.check_k(k, B)
    return {matrix_name(layer, kind): int(kinds[kind]) for layer in range(model.config.n_layers)
            for kind in LAYER_MATRICES}


def bits_per_weight(per_matrix_k: dict, sizes: dict) -> float:
    """Average k over the matrices of a schedule, weighted by their number of weights."""
    total = sum(sizes[name] for name in per_matrix_k)
    return sum(sizes[name] * k for name, k in per_matrix_k.items()) / total


def kind_sensitivity(ks=(5, 4), n_windows: int = 2, window: int = 256, part: str = "background",
                     log=print) -> dict:
    """Perplexity on the calibration text with all matrices of one kind read at k (the others at reference):
    {"reference": ppl, "<kind>@<k>": ppl}. About 15 forwards."""
    from smartquant.workloads import llm_sweep
    from smartquant.workloads.minilm import single_blas_thread
    from smartquant.workloads.smollm2 import LAYER_MATRICES, matrix_name
    setup = llm_sweep.prepare(None, n_windows, window, part=part)
    fmt = llm_sweep.llm_format("int8")
    result = {}
    with single_blas_thread():
        result["reference"] = llm_sweep.evaluate(setup)[0]
        for kind in LAYER_MATRICES:
            for k in ks:
                names = [matrix_name(layer, kind) for layer in range(setup.model.config.n_layers)]
                read = {name: quant.StoredMatrix(setup.model.weights[name], fmt).read(
                    k, llm_sweep.DEFAULT_RULE, corrected=llm_sweep.DEFAULT_CORRECTION) for name in names}
                result[f"{kind}@{k}"] = llm_sweep.evaluate(setup, read)[0]
                log(f"{kind} at k = {k}: perplexity {result[f'{kind}@{k}']:.2f} (reference {result['reference']:.2f})")
    return result


if __name__ == "__main__":   # python -m smartquant.workloads.stream_workloads --sensitivity
    import sys
    if "--sensitivity" in sys.argv:
        kind_sensitivity()
