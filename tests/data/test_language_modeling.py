"""Tiny Shakespeare pipelines: the text, the 90/10 split at TFDS's boundary, windows, BPE ids."""

import os

import numpy as np
import pytest

from keras_transformers.data import language_modeling
from tests.testing import SHARED_DATA

needs_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt")),
    reason="needs ../shared/data/tinyshakespeare",
)


@needs_data
def test_text_characters_and_split():
    text, source = language_modeling.load_tiny_shakespeare(SHARED_DATA)
    assert len(text) == 1_115_394 and source.endswith("input.txt")
    ids = language_modeling.tokenize(text, language_modeling.character_tokenizer())
    # Character level: one id per character, its code point (the text is ASCII).
    np.testing.assert_array_equal(ids, np.frombuffer(text.encode("ascii"), np.uint8))
    train, validation = language_modeling.split_ids(ids, 0.1)
    # TFDS tiny_shakespeare's train split is the first int(0.9 * len) characters.
    assert len(train) == int(len(text) * 0.9) == 1_003_854
    assert len(train) + len(validation) == len(text)


def test_missing_text_raises_and_sample_fallback(tmp_path):
    with pytest.raises(FileNotFoundError):
        language_modeling.load_tiny_shakespeare(str(tmp_path))
    text, source = language_modeling.load_tiny_shakespeare(str(tmp_path), packaged_sample=True)
    assert text.startswith("First Citizen:") and "packaged" in source


@needs_data
def test_tfds_prepares_tiny_shakespeare_offline_and_the_loader_joins_its_splits(tmp_path, monkeypatch):
    """TFDS takes ../shared/data/tinyshakespeare as its manual folder (no internet), and the
    TFDS fallback of load_tiny_shakespeare gives back the local file exactly."""
    tfds = pytest.importorskip("tensorflow_datasets")
    builder = tfds.builder("tiny_shakespeare", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        download_dir=str(tmp_path / "downloads"),
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.join(SHARED_DATA, "tinyshakespeare")),
    )
    real_load = tfds.load
    monkeypatch.setattr(
        tfds, "load", lambda name, **kwargs: real_load(name, data_dir=str(tmp_path / "tfds"), download=False, **kwargs)
    )
    text, source = language_modeling.load_tiny_shakespeare(str(tmp_path / "empty"), download=True)
    assert source == "tfds tiny_shakespeare"
    with open(os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt"), encoding="utf-8") as f:
        assert text == f.read()


def test_tfds_failure_is_named(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(name, **kwargs):
        raise ConnectionError("no route to host\nmore details")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(FileNotFoundError, match="TFDS tiny_shakespeare failed \\(ConnectionError: no route to host\\)"):
        language_modeling.load_tiny_shakespeare(str(tmp_path), download=True)
    text, source = language_modeling.load_tiny_shakespeare(str(tmp_path), download=True, packaged_sample=True)
    assert text.startswith("First Citizen:")
    assert source == "packaged sample (keras_transformers/data); TFDS tiny_shakespeare failed: ConnectionError: no route to host"


def test_training_windows_are_next_token_pairs():
    ids = np.arange(1000, dtype="int32")
    dataset = language_modeling.training_windows(ids, 16, batch_size=4, seed=3)
    batches = [batch for batch, _ in zip(dataset, range(3))]
    starts = []
    for inputs, targets in batches:
        token_ids = inputs["token_ids"].numpy()
        assert token_ids.shape == (4, 16) and token_ids.dtype == np.int32
        np.testing.assert_array_equal(targets.numpy(), token_ids + 1)
        np.testing.assert_array_equal(np.diff(token_ids, axis=1), 1)  # contiguous windows
        assert inputs["padding_mask"].numpy().all()
        starts.extend(token_ids[:, 0])
    assert len(set(starts)) > 8  # random starts
    again = next(iter(language_modeling.training_windows(ids, 16, batch_size=4, seed=3)))
    np.testing.assert_array_equal(again[0]["token_ids"].numpy(), batches[0][0]["token_ids"].numpy())


def test_evaluation_windows_cover_the_text_once():
    ids = np.arange(103, dtype="int32")
    dataset = language_modeling.evaluation_windows(ids, 10, batch_size=4)
    inputs = np.concatenate([x["token_ids"].numpy() for x, _ in dataset])
    targets = np.concatenate([y.numpy() for _, y in dataset])
    np.testing.assert_array_equal(inputs.ravel(), np.arange(100))
    np.testing.assert_array_equal(targets.ravel(), np.arange(1, 101))
    with pytest.raises(ValueError, match="`sequence_length` must be a positive int"):
        language_modeling.evaluation_windows(ids, 0, batch_size=4)
    with pytest.raises(ValueError, match="at least"):
        language_modeling.training_windows(ids[:5], 10, batch_size=4)


@needs_data
def test_gpt2_bpe_ids_equal_hugging_face():
    transformers = pytest.importorskip("transformers")
    text, _ = language_modeling.load_tiny_shakespeare(SHARED_DATA)
    excerpt = text[:3000]
    tokenizer = language_modeling.gpt2_bpe_tokenizer(SHARED_DATA)
    ids = language_modeling.tokenize(excerpt, tokenizer, chunk_lines=20)
    # Chunking changes nothing: the same ids as one call on the whole excerpt.
    np.testing.assert_array_equal(ids, language_modeling.tokenize(excerpt, tokenizer, chunk_lines=10**6))
    reference = transformers.GPT2TokenizerFast(
        vocab=os.path.join(SHARED_DATA, "gpt2-bpe", "encoder.json"),
        merges=os.path.join(SHARED_DATA, "gpt2-bpe", "vocab.bpe"),
    )
    # keras-hub's BytePairTokenizer keeps "\n\n" before a word as one token (628) where
    # GPT-2's regex gives two "\n" (198, 198); elsewhere the ids are GPT-2's.
    single_newlines = excerpt.replace("\n\n", "\n")
    np.testing.assert_array_equal(
        language_modeling.tokenize(single_newlines, tokenizer, chunk_lines=20),
        reference(single_newlines)["input_ids"],
    )
    assert int(tokenizer.vocabulary_size()) == 50257
