import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("keras_hub")

from keras_transformers.data import translation  # noqa: E402
from tests.testing import SHARED_DATA  # noqa: E402

MULTI30K = os.path.join(SHARED_DATA, "multi30k")
VOCABULARY = list(translation.SPECIAL_TOKENS) + [
    "ein", "hund", "rennt", "zwei", "kinder", "a", "dog", "runs", "two", "children", ".", "##s",
]
SOURCES = ["Ein Hund rennt.", "Zwei Kinder", "Ein Hund rennt rennt rennt rennt rennt rennt."]
TARGETS = ["A dog runs.", "Two children.", "A dog"]


@pytest.fixture(scope="module")
def tokenizer():
    return translation.word_piece_tokenizer(VOCABULARY)


def _batches(dataset):
    return [tuple(tf.nest.map_structure(lambda x: x.numpy(), batch)) for batch in dataset]


def test_teacher_forcing_batches(tokenizer):
    dataset = translation.translation_dataset(
        SOURCES, TARGETS, tokenizer, batch_size=2, max_length=8, bucket_boundaries=(6,)
    )
    seen = 0
    for inputs, labels, weights in _batches(dataset):
        length = labels.shape[1]
        assert length in (6, 8)
        for name in inputs:
            assert inputs[name].shape == (labels.shape[0], length) and inputs[name].dtype == np.int32
        np.testing.assert_array_equal(inputs["decoder_token_ids"][:, 0], translation.START_ID)
        # Shifted by one: the decoder reads the label of the previous position.
        np.testing.assert_array_equal(
            inputs["decoder_token_ids"][:, 1:] * weights[:, 1:], labels[:, :-1] * weights[:, 1:]
        )
        np.testing.assert_array_equal(weights, inputs["decoder_padding_mask"])
        np.testing.assert_array_equal(inputs["encoder_padding_mask"], inputs["encoder_token_ids"] != 0)
        np.testing.assert_array_equal(inputs["decoder_padding_mask"], inputs["decoder_token_ids"] != 0)
        for row in range(labels.shape[0]):
            n = int(weights[row].sum())
            assert labels[row, n - 1] == translation.END_ID
            m = int(inputs["encoder_padding_mask"][row].sum())
            assert inputs["encoder_token_ids"][row, m - 1] == translation.END_ID
            seen += 1
    assert seen == 3


def test_labels_are_the_tokenized_targets(tokenizer):
    dataset = translation.translation_dataset(
        SOURCES, TARGETS, tokenizer, batch_size=1, max_length=8, bucket_boundaries=()
    )
    got = {}
    for inputs, labels, weights in _batches(dataset):
        n = int(weights[0].sum())
        got[tuple(labels[0, : n - 1])] = tuple(inputs["encoder_token_ids"][0])
    for source, target in zip(SOURCES, TARGETS):
        expected_target = tuple(tokenizer([target])[0][:7])
        expected_source = tokenizer([source])[0][:7] + [translation.END_ID]
        padded = tuple(expected_source + [0] * (8 - len(expected_source)))
        assert got[expected_target] == padded
    # The long source is cut to max_length, [END] included.
    assert any(len([t for t in source if t]) == 8 for source in got.values())


def test_shuffle_is_seeded(tokenizer):
    def order(seed):
        dataset = translation.translation_dataset(
            SOURCES * 4, TARGETS * 4, tokenizer, batch_size=1, shuffle=True, seed=seed
        )
        return [tuple(batch[1][0]) for batch in _batches(dataset)]

    assert order(1) == order(1)
    assert sorted(order(1)) == sorted(order(2))


def test_detokenize_round_trip(tokenizer):
    ids = [[translation.START_ID] + tokenizer(["A dog runs."])[0] + [translation.END_ID, 7, 7, 0]]
    assert translation.detokenize(tokenizer, ids) == ["a dog runs ."]
    assert translation.join_punctuation("a man ' s t - shirt") == "a man's t-shirt"


def test_vocabulary_is_cached(tmp_path, monkeypatch):
    path = str(tmp_path / "vocab.txt")
    texts = ["ein hund rennt", "a dog runs", "zwei hunde rennen"] * 5
    vocabulary = translation.word_piece_vocabulary(texts, 60, path=path)
    assert vocabulary[:4] == list(translation.SPECIAL_TOKENS)
    assert os.path.exists(path)

    def fail(*args, **kwargs):
        raise AssertionError("the cached vocabulary was not used")

    monkeypatch.setattr(translation.keras_hub.tokenizers, "compute_word_piece_vocabulary", fail)
    assert translation.word_piece_vocabulary(texts, 60, path=path) == vocabulary


def test_encode_sources(tokenizer):
    inputs = translation.encode_sources(["Ein Hund", "Hund"], tokenizer, max_length=2)
    np.testing.assert_array_equal(inputs["encoder_token_ids"], [[4, 3], [5, 3]])
    np.testing.assert_array_equal(inputs["encoder_padding_mask"], [[1, 1], [1, 1]])


def test_bad_arguments_raise(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="`split` must be one of"):
        translation.read_multi30k(str(tmp_path), "dev", "de")
    with pytest.raises(FileNotFoundError, match="`data_dir` must hold val.de.gz"):
        translation.read_multi30k(str(tmp_path), "val", "de")
    with pytest.raises(ValueError, match="the same length"):
        translation.translation_dataset(["a"], [], tokenizer, batch_size=1)


@pytest.mark.skipif(not os.path.isdir(MULTI30K), reason="no local Multi30k copy")
def test_real_multi30k_splits():
    sizes = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}
    for split, size in sizes.items():
        sources, targets = translation.load_multi30k(MULTI30K, split)
        assert len(sources) == len(targets) == size
    sources, targets = translation.load_multi30k(MULTI30K, "val")
    assert all(s.strip() and t.strip() for s, t in zip(sources, targets))
    assert not any(s.endswith("\r") for s in sources)
