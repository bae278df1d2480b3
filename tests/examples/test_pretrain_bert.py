"""The smoke run of examples/pretrain_bert.py: MLM + NSP, held-out accuracies, backbone, export."""

import os

import keras
import pytest

import keras_transformers.models  # noqa: F401  (registers the classes backbone.keras holds)

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, run_through_tfds,
    smoke_marks,
)
from tests.testing import SHARED_DATA

pytestmark = smoke_marks("agnews", reason="no local AG News copy")


def test_pretrain_bert_smoke(tmp_path):
    output = tmp_path / "run"
    run_example("pretrain_bert.py", output, "--export-dir", str(tmp_path / "export"))
    metrics = read_metrics(output)
    assert metrics["smoke"] and metrics["backend"] == "jax"
    assert_finite(metrics, "held_out_mlm_accuracy", "held_out_nsp_accuracy", "held_out_loss")
    assert 0 <= metrics["held_out_mlm_accuracy"] <= 1 and 0 <= metrics["held_out_nsp_accuracy"] <= 1
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]
    assert_pictures(metrics)
    load_export(metrics)
    # The backbone and vocabulary that finetune_bert.py --backbone reads.
    backbone = keras.saving.load_model(output / "backbone.keras")
    assert set(backbone.input) == {"token_ids", "segment_ids", "padding_mask"}
    with open(output / "vocab.txt", encoding="utf-8") as f:
        vocabulary = f.read().split("\n")
    assert vocabulary[:5] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    assert backbone.get_layer("token_embedding").input_dim == metrics["vocabulary_size"]


@pytest.mark.slow
def test_pretrain_bert_smoke_reads_the_same_articles_through_tfds(tmp_path):
    """--tfds: the articles come through the local_ag_news_subset TFDS builder (dev.tsv is its
    train split); the vocabulary and the pair counts are those of the files' articles."""
    from keras_transformers.data import bert as bert_data

    output, metrics = run_through_tfds("pretrain_bert.py", tmp_path, "local_ag_news_subset")
    config = metrics["config"]
    folder = os.path.join(SHARED_DATA, "agnews")
    # The smoke run trains on the first 400 articles of dev.tsv and holds out test.tsv's first 64.
    train = bert_data.read_agnews(os.path.join(folder, "dev.tsv"), limit=config["train_limit"])
    held_out = bert_data.read_agnews(os.path.join(folder, "test.tsv"), limit=64)
    expected = bert_data.word_piece_vocabulary([" ".join(d) for d in train], config["vocabulary_size"])
    with open(output / "vocab.txt", encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == expected
    assert metrics["train_pairs"] == len(bert_data.nsp_pairs(train, seed=config["seed"], duplicates=1))
    assert metrics["held_out_pairs"] == len(bert_data.nsp_pairs(held_out, seed=config["seed"] + 1))
    assert_finite(metrics, "held_out_mlm_accuracy", "held_out_nsp_accuracy", "held_out_loss")
