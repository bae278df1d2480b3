import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras_hub = pytest.importorskip("keras_hub")

from keras_transformers.data import bert as bert_data  # noqa: E402
from tests.testing import SHARED_DATA  # noqa: E402

WORDS = [f"w{i}" for i in range(40)]
VOCABULARY = list(bert_data.SPECIAL_TOKENS) + WORDS
PAD, CLS, SEP, MASK = 0, 1, 2, 4


@pytest.fixture(scope="module")
def tokenizer():
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=VOCABULARY)


def _numpy(batch):
    return tf.nest.map_structure(lambda x: x.numpy(), batch)


def test_masking_statistics_follow_the_paper(tokenizer):
    rng = np.random.default_rng(0)
    pairs = [
        (" ".join(rng.choice(WORDS, 12)), " ".join(rng.choice(WORDS, 12)), int(i % 2))
        for i in range(400)
    ]
    tf.random.set_seed(0)
    dataset = bert_data.pretraining_dataset(pairs, tokenizer, 32, max_predictions=12, batch_size=100)
    chosen = selectable = masked = replaced = kept = 0
    for inputs, labels, weights in map(_numpy, dataset):
        positions, ids, w = inputs["mask_positions"], labels["mlm_logits"], weights["mlm_logits"]
        token_ids = inputs["token_ids"]
        selectable += int(inputs["padding_mask"].sum()) - 3 * len(token_ids)  # minus [CLS], [SEP] x2
        for row in range(len(token_ids)):
            for position, original, weight in zip(positions[row], ids[row], w[row]):
                if not weight:
                    continue
                chosen += 1
                assert original not in (PAD, CLS, SEP, MASK)  # specials are never chosen
                now = token_ids[row, position]
                masked += now == MASK
                kept += now == original
                replaced += now not in (MASK, original)
    assert 0.13 < chosen / selectable < 0.17
    assert 0.76 < masked / chosen < 0.84
    # A random replacement can draw the original token (1 in vocabulary size).
    assert 0.07 < replaced / chosen < 0.13
    assert 0.07 < kept / chosen < 0.13


def test_pretraining_example_layout(tokenizer):
    pairs = [("w1 w2 w3", "w4 w5", bert_data.IS_NEXT), ("w6", "w7 w8", bert_data.NOT_NEXT)]
    inputs, labels, weights = _numpy(
        next(iter(bert_data.pretraining_dataset(pairs, tokenizer, 10, 3, batch_size=2)))
    )
    np.testing.assert_array_equal(
        inputs["segment_ids"], [[0, 0, 0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        inputs["padding_mask"], [[1] * 8 + [0] * 2, [1] * 6 + [0] * 4]
    )
    for row in range(2):
        tokens = inputs["token_ids"][row]
        assert tokens[0] == CLS and tokens[inputs["padding_mask"][row].sum() - 1] == SEP
        assert (tokens == SEP).sum() == 2
    np.testing.assert_array_equal(labels["nsp_logits"], [0, 1])
    np.testing.assert_array_equal(weights["nsp_logits"], [1.0, 1.0])
    assert inputs["mask_positions"].shape == labels["mlm_logits"].shape == (2, 3)


def test_masks_are_fixed_when_cached_and_differ_between_copies(tokenizer):
    pairs = [(" ".join(WORDS[:20]), " ".join(WORDS[20:]), 0)] * 8

    def positions(dataset):
        return [row for batch in dataset for row in _numpy(batch)[0]["mask_positions"].tolist()]

    cached = bert_data.pretraining_dataset(pairs, tokenizer, 48, 8, 4, cache_masks=True)
    first = positions(cached)
    assert positions(cached) == first
    # Copies of one pair are masked differently (BERT's dupe_factor).
    assert len({tuple(row) for row in first}) > 1


def test_nsp_pairs():
    documents = [[f"d{d} s{s} more words here." for s in range(3)] for d in range(200)]
    documents.append(["single sentence with seven words in it"])
    pairs = bert_data.nsp_pairs(documents, seed=1, duplicates=2)
    assert len(pairs) == 2 * 201
    labels = np.array([label for _, _, label in pairs])
    assert 0.4 < labels.mean() < 0.6
    for first, second, label in pairs:
        first_doc, second_doc = first.split()[0], second.split()[0]
        if first.startswith("single"):
            continue
        if label == bert_data.IS_NEXT:
            assert first_doc == second_doc  # B continues A's document
            assert (first + " " + second) == " ".join(documents[int(first_doc[1:])])
        elif not second_doc.startswith(("single", "with", "seven", "words", "in", "it")):
            assert first_doc != second_doc
    assert bert_data.nsp_pairs(documents, seed=1) == bert_data.nsp_pairs(documents, seed=1)
    # A one-sentence document is cut inside the sentence.
    cut = [p for p in bert_data.nsp_pairs([documents[-1]]) if p[0].startswith("single")]
    assert cut and cut[0][2] == bert_data.IS_NEXT
    assert cut[0][0] + " " + cut[0][1] == documents[-1][0]


def test_classification_dataset(tokenizer):
    inputs, labels = _numpy(
        next(iter(bert_data.classification_dataset(["w1 w2", "w3"], [1, 0], tokenizer, 5, 2)))
    )
    np.testing.assert_array_equal(inputs["token_ids"], [[CLS, 6, 7, SEP, PAD], [CLS, 8, SEP, PAD, PAD]])
    np.testing.assert_array_equal(inputs["segment_ids"], np.zeros((2, 5)))
    np.testing.assert_array_equal(inputs["padding_mask"], [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(labels, [1, 0])


def _random_sentences(count, longest, seed=0):
    rng = np.random.default_rng(seed)
    sentences = [" ".join(rng.choice(WORDS, int(n))) for n in rng.integers(1, longest + 1, count)]
    return sentences, rng.integers(0, 2, count)


def _packed(tokenizer, sentences, sequence_length):
    """[CLS] sentence [SEP], cut to sequence_length, straight from the tokenizer."""
    return [[CLS] + list(row[: sequence_length - 2]) + [SEP] for row in tokenizer(sentences)]


def _rows(dataset):
    """Every (unpadded token ids, label) of an epoch, and the batches' lengths."""
    rows, lengths = [], []
    for inputs, labels in map(_numpy, dataset):
        lengths.append(inputs["token_ids"].shape[1])
        for token_ids, mask, label in zip(inputs["token_ids"], inputs["padding_mask"], labels):
            rows.append((tuple(token_ids[mask == 1].tolist()), int(label)))
    return sorted(rows), lengths


def test_buckets_pad_each_batch_to_the_first_bound_that_holds_it(tokenizer):
    sentences, labels = _random_sentences(300, 36)
    expected = dict(zip(sentences, _packed(tokenizer, sentences, 32)))
    dataset = bert_data.classification_dataset(
        sentences, labels, tokenizer, 32, 8, shuffle=True, seed=3, bucket_boundaries=(8, 16)
    )
    lengths = set()
    by_ids = {tuple(row): sentence for sentence, row in expected.items()}
    for inputs, _ in map(_numpy, dataset):
        token_ids, mask = inputs["token_ids"], inputs["padding_mask"]
        length = token_ids.shape[1]
        lengths.add(length)
        longest = int(mask.sum(1).max())
        assert length == min(b for b in (8, 16, 32) if b >= longest)
        assert inputs["segment_ids"].shape == mask.shape == token_ids.shape
        np.testing.assert_array_equal(inputs["segment_ids"], 0)
        np.testing.assert_array_equal(mask, token_ids != PAD)
        for row, row_mask in zip(token_ids, mask):
            n = int(row_mask.sum())
            assert row_mask[:n].all() and not row_mask[n:].any()  # right-padded
            sentence = by_ids[tuple(row[:n].tolist())]
            if len(sentence.split()) <= 30:  # fits: nothing cut
                assert n == len(sentence.split()) + 2
    assert lengths == {8, 16, 32}


def test_buckets_keep_every_sentence_and_label(tokenizer):
    sentences, labels = _random_sentences(200, 36, seed=1)
    expected = sorted(zip(map(tuple, _packed(tokenizer, sentences, 32)), labels.tolist()))
    packed_lengths = np.array([len(row) for row, _ in expected])
    sizes = [np.sum(packed_lengths <= 12), np.sum((packed_lengths > 12) & (packed_lengths <= 20)),
             np.sum(packed_lengths > 20)]
    plain, plain_lengths = _rows(bert_data.classification_dataset(sentences, labels, tokenizer, 32, 16))
    bucketed, lengths = _rows(
        bert_data.classification_dataset(
            sentences, labels, tokenizer, 32, 16, shuffle=True, bucket_boundaries=[12, 20]
        )
    )
    assert plain == bucketed == expected
    # The epoch's length is known (Keras' fit relies on it): every partial batch is kept.
    kept = bert_data.classification_dataset(sentences, labels, tokenizer, 32, 16, bucket_boundaries=[12, 20])
    assert int(kept.cardinality()) == len(list(kept)) == sum(-(-int(size) // 16) for size in sizes)
    assert set(plain_lengths) == {32} and set(lengths) == {12, 20, 32}
    # drop_remainder drops each bucket's last partial batch, nothing else.
    dropped = bert_data.classification_dataset(
        sentences, labels, tokenizer, 32, 16, shuffle=True, drop_remainder=True, bucket_boundaries=[12, 20]
    )
    batches = [inputs["token_ids"].shape for inputs, _ in map(_numpy, dropped)]
    assert all(shape[0] == 16 for shape in batches)
    assert len(batches) == int(dropped.cardinality()) == sum(int(size) // 16 for size in sizes)
    for bound, size in zip((12, 20, 32), sizes):
        assert sum(shape[1] == bound for shape in batches) == int(size) // 16


def test_bucketed_shuffle_is_seeded(tokenizer):
    sentences, labels = _random_sentences(120, 20, seed=2)

    def epochs(seed):
        dataset = bert_data.classification_dataset(
            sentences, labels, tokenizer, 24, 8, shuffle=True, seed=seed, bucket_boundaries=[8]
        )
        return [[inputs["token_ids"].tolist() for inputs, _ in map(_numpy, dataset)] for _ in range(2)]

    first = epochs(seed=5)
    assert first == epochs(seed=5)
    assert first[0] != first[1]  # reshuffled each epoch
    assert first != epochs(seed=6)


@pytest.mark.parametrize("bad", [(16, 8), (8, 8), (0, 8), (-4,), (8.0,), (True,), "16", 16])
def test_bad_bucket_boundaries_raise(bad):
    # Raised before the tokenizer (here a wrong one) is touched.
    with pytest.raises(ValueError, match="`bucket_boundaries` must be None or increasing positive ints. "
                                         "Received: bucket_boundaries="):
        bert_data.classification_dataset(["a"], [0], None, 32, 1, bucket_boundaries=bad)


def test_pad_must_be_zero():
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", "a"]
    )
    with pytest.raises(ValueError, match="must map \\[PAD\\] to 0"):
        bert_data.classification_dataset(["a"], [0], tokenizer, 4, 1)


def test_text_cleaning_and_sentences():
    assert bert_data.clean_text("It #39;s  A\\B &lt;b&gt;") == "It's A B <b>"
    assert bert_data.split_sentences("U.S. stocks fell. Then rose.") == ["U.S. stocks fell.", "Then rose."]


def test_read_sst2_with_crlf(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"label\tsentence\r\n1\tit 's a gem \r\n0\tdull\r\n")
    sentences, labels = bert_data.read_sst2(str(path))
    assert sentences == ["it 's a gem ", "dull"]
    np.testing.assert_array_equal(labels, [1, 0])
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nx\t1\n")
    with pytest.raises(ValueError, match="`path` must be an SST-2 tsv"):
        bert_data.read_sst2(str(bad))


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "sst2")), reason="no local SST-2")
def test_real_sst2():
    for split, size in (("train", 67349), ("dev", 872)):
        sentences, labels = bert_data.read_sst2(os.path.join(SHARED_DATA, "sst2", f"{split}.tsv"))
        assert len(sentences) == len(labels) == size
        assert set(labels.tolist()) == {0, 1}
        assert not any("\r" in s or "\t" in s for s in sentences)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "agnews")), reason="no local AG News")
def test_real_agnews():
    documents = bert_data.read_agnews(os.path.join(SHARED_DATA, "agnews", "test.tsv"))
    assert len(documents) == 7600
    text = " ".join(" ".join(d) for d in documents)
    assert "#39;" not in text and "\t" not in text
    assert sum(len(d) >= 2 for d in documents) > 1500
