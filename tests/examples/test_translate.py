"""The smoke run of examples/translate.py: trains, scores BLEU, draws, exports (JAX only in CI)."""

import os

import numpy as np
import pytest

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, run_through_tfds,
    smoke_marks,
)
from tests.testing import SHARED_DATA

pytestmark = smoke_marks("multi30k", reason="no local Multi30k copy")


def test_translate_smoke(tmp_path):
    output = tmp_path / "run"
    run_example("translate.py", output, "--export-dir", str(tmp_path / "export"))
    metrics = read_metrics(output)
    assert metrics["smoke"] and metrics["backend"] == "jax"
    assert_finite(metrics, "train_loss", "val_loss", "val_accuracy", "test_bleu_greedy", "test_bleu_beam")
    assert 0 <= metrics["test_bleu_greedy"] <= 100 and 0 <= metrics["test_bleu_beam"] <= 100
    # The loss went down (label smoothing keeps it above 0; padding is masked out).
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]
    assert metrics["train_steps"] > 0 and metrics["initial_step"] == 0
    assert set(metrics["pictures"]) == {"positional_encoding", "cross_attention"}
    assert_pictures(metrics)
    assert os.path.isfile(output / "vocab.txt")
    assert os.path.isfile(output / "checkpoints" / "best.weights.h5")
    loaded = load_export(metrics)
    assert metrics["export"]["path"].startswith(str(tmp_path / "export"))
    outputs = loaded.signatures["serving_default"](
        encoder_token_ids=np.array([[5, 6, 3]], "int32"),
        encoder_padding_mask=np.ones((1, 3), "int32"),
        decoder_token_ids=np.array([[2, 7]], "int32"),
        decoder_padding_mask=np.ones((1, 2), "int32"),
    )
    assert outputs["logits"].shape == (1, 2, metrics["vocabulary_size"])


@pytest.mark.slow
def test_translate_smoke_reads_the_same_pairs_through_tfds(tmp_path):
    """--tfds: the pairs come through the local_multi30k TFDS builder; the vocabulary the run
    learned is the one learned from the files' first training pairs, both languages."""
    from keras_transformers.data import translation

    output, metrics = run_through_tfds("translate.py", tmp_path, "local_multi30k")
    config = metrics["config"]
    german, english = translation.load_multi30k(os.path.join(SHARED_DATA, "multi30k"), "train")
    limit = config["train_limit"]
    expected = translation.word_piece_vocabulary(german[:limit] + english[:limit], config["vocabulary_size"])
    with open(output / "vocab.txt", encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == expected
    assert metrics["vocabulary_size"] == len(expected) and metrics["test_sentences"] == 16
    assert metrics["train_steps"] == config["epochs"] * (limit // config["batch_size"])
    assert_finite(metrics, "train_loss", "val_loss", "val_accuracy", "test_bleu_greedy", "test_bleu_beam")
