"""Held-out English prose for perplexity: the Lee corpus, as the gensim wheel ships it.

The Lee corpus (M. D. Lee, B. Pincombe, M. Welsh, "An empirical evaluation of models of text document
similarity", CogSci 2005) is news prose from the Australian Broadcasting Corporation's news mail service, one
document per line, in gensim's test data (Latin-1: the one non-ASCII byte of lee.cor is a pound sign):
- gensim/test/test_data/lee.cor: the 50 documents the similarity study rated (24.7 kB): the evaluation text;
- gensim/test/test_data/lee_background.cor: 300 other documents of the same service (360 kB): calibration text
  for policies, never scored.
Nothing proves the model never saw these articles in training; "held out" means that the quantization and
policy choices are never tuned on lee.cor, the text they are evaluated on.

Only the files are read: gensim is installed with --no-deps and never imported (its own dependencies are not
needed), so the package is found with importlib.util.find_spec, which does not run its __init__.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from smartquant.errors import SmartquantError

PIP_INSTALL = "pip install --no-deps gensim==4.4.0"
PARTS = {"test": "lee.cor", "background": "lee_background.cor"}


def lee_path(part: str = "test") -> Path:
    if part not in PARTS:
        raise SmartquantError(f"Lee corpus part must be one of {', '.join(PARTS)}, got {part!r}")
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise SmartquantError(f"the Lee corpus comes with gensim, which is not installed; run: {PIP_INSTALL}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "test" / "test_data" / PARTS[part]
        if path.is_file():
            return path
    raise SmartquantError(f"gensim is installed without its test data ({PARTS[part]}); run: {PIP_INSTALL}")


def lee_documents(part: str = "test") -> list[str]:
    """The documents of one part, in file order, stripped; empty lines dropped."""
    lines = lee_path(part).read_text(encoding="latin-1").splitlines()
    return [line.strip() for line in lines if line.strip()]


def lee_text(part: str = "test") -> str:
    """One part as a single text: documents joined by blank lines."""
    return "\n\n".join(lee_documents(part))
