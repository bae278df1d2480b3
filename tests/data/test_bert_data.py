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
