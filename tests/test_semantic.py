"""Attribute names read from the datasets' own files, and word vectors from a sentence encoder
(a fake one here; the real model where the ``semantic`` extra is installed)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from zeromamba.data import DataError, load, semantic
from zeromamba.data.attribute_names import find_attribute_names, read_numbered_names


def test_attribute_names_from_the_shipped_files(tmp_path):
    cub = tmp_path / "CUB" / "CUB_200_2011"
    cub.mkdir(parents=True)
    (cub / "attributes.txt").write_text(
        "1 has_bill_shape::curved_(up_or_down)\n2 has_bill_shape::dagger\n"
    )
    names, path = find_attribute_names("CUB", [str(tmp_path)], 2)
    assert names == ["has_bill_shape::curved_(up_or_down)", "has_bill_shape::dagger"]
    assert path.endswith("attributes.txt")
    awa = tmp_path / "AWA2" / "Animals_with_Attributes2"
    awa.mkdir(parents=True)
    (awa / "predicates.txt").write_text("1\tblack\n2\twhite\n3\tblue\n")
    assert find_attribute_names("AWA2", [str(tmp_path)], 3)[0] == ["black", "white", "blue"]
    sun = tmp_path / "SUN" / "SUNAttributeDB"
    sun.mkdir(parents=True)
    from scipy.io import savemat

    cells = np.empty((2,), dtype=object)
    cells[:] = ["sailing/ boating", "driving"]
    savemat(sun / "attributes.mat", {"attributes": cells})
    assert find_attribute_names("SUN", [str(tmp_path)], 2)[0] == ["sailing/ boating", "driving"]
    assert find_attribute_names("SUN", [str(tmp_path / "nowhere")], 2) is None
    with pytest.raises(DataError, match="3 attribute names but att_splits.mat has 85"):
        find_attribute_names("AWA2", [str(tmp_path)], 85)
    (awa / "predicates.txt").write_text("1\tblack\n3\tblue\n")
    with pytest.raises(DataError, match="expected 2"):
        read_numbered_names(str(awa / "predicates.txt"))


def test_attribute_text_is_readable():
    assert semantic.attribute_text("has_bill_shape::curved_(up_or_down)") == (
        "bill shape: curved (up or down)"
    )
    assert semantic.attribute_text("colour red") == "colour red"


class FakeEncoder:
    """Deterministic 'sentence vectors': letter counts, so equal texts give equal vectors."""

    def __init__(self):
        self.calls = 0

    def __call__(self, sentences):
        self.calls += 1
        out = np.zeros((len(sentences), 26), dtype=np.float32)
        for i, s in enumerate(sentences):
            for ch in s.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_vectors_are_computed_once_and_cached_next_to_the_data(tmp_path):
    enc = FakeEncoder()
    names = ["colour red", "has_shape::round"]
    v, source = semantic.attribute_word_vectors(
        names, str(tmp_path), encoder=enc, model_name="fake"
    )
    assert source == "fake" and v.shape == (2, 26) and enc.calls == 1
    torch.testing.assert_close(v[1], torch.from_numpy(enc(["shape: round"])[0]))
    assert len(list(tmp_path.glob("word_vectors.fake.*.npz"))) == 1
    # the cache is used without an encoder (the model is not loaded again)
    cached = semantic._cached(names, "fake", str(tmp_path), None)
    torch.testing.assert_close(cached, v)
    # other names do not hit that cache
    assert semantic._cached(["colour blue"], "fake", str(tmp_path), None) is None


def test_fallback_to_pseudo_vectors_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(semantic, "load_encoder", lambda: (None, "no model here"))
    with pytest.warns(UserWarning, match="no model here; using pseudo-embeddings"):
        v, source = semantic.attribute_word_vectors(["a b"], str(tmp_path))
    assert source == "pseudo" and v.shape == (1, 300)
    with pytest.raises(DataError, match="'semantic' requested but no model here"):
        semantic.attribute_word_vectors(["a b"], str(tmp_path), required=True)


def test_load_uses_the_encoder_for_data_without_word_vectors(tmp_path, monkeypatch):
    enc = FakeEncoder()
    monkeypatch.setattr(semantic, "load_encoder", lambda: (enc, "fake"))
    data = load("builtin", cache_dir=str(tmp_path), word_vectors="semantic")
    assert data.word_vector_source == "fake" and data.word_vectors.shape == (10, 26)
    # "auto" keeps the built-in task's pseudo-vectors (measured: no gain on its validation task)
    assert load("builtin", cache_dir=str(tmp_path)).word_vector_source == "pseudo"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pseudo = load("builtin", cache_dir=str(tmp_path), word_vectors="pseudo")
    assert pseudo.word_vector_source == "pseudo" and pseudo.word_vectors.shape == (10, 300)
    with pytest.raises(ValueError, match="word_vectors must be one of"):
        load("builtin", cache_dir=str(tmp_path), word_vectors="w2v")


def test_real_sentence_model_where_installed(tmp_path):
    pytest.importorskip("sentence_transformers")
    encoder, name = semantic.load_encoder()
    if encoder is None:
        pytest.skip(name)
    v = encoder(["colour red", "colour blue", "shape square"])
    assert v.shape[0] == 3 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    # related phrases are closer than unrelated ones
    assert v[0] @ v[1] > v[0] @ v[2]
