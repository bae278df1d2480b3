"""The smoke run of examples/finetune_bert.py, killed mid-epoch and resumed from its backup."""

import os

import numpy as np
import pytest

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, run_through_tfds,
    smoke_marks,
)
from tests.testing import SHARED_DATA

pytestmark = smoke_marks("sst2", reason="no local SST-2 copy")


def _smoke_steps_per_epoch(output):
    """Batches of 32 of the smoke run's 512 sentences, tokenized with the vocabulary it learned,
    in its length buckets ([CLS] sentence [SEP] <= 16 or <= 32 tokens), partial batches dropped."""
    import keras_hub

    with open(os.path.join(SHARED_DATA, "sst2", "train.tsv"), encoding="utf-8") as f:
        sentences = [line.rstrip("\r\n").split("\t", 1)[1] for line in f.readlines()[1:513]]
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=str(output / "vocab.txt"), lowercase=True, strip_accents=True
    )
    lengths = np.array([len(ids) + 2 for ids in tokenizer(sentences)])
    return int(np.sum(lengths <= 16)) // 32 + int(np.sum(lengths > 16)) // 32


def test_finetune_bert_smoke_resumes_after_a_kill(tmp_path):
    output, export = tmp_path / "run", ["--export-dir", str(tmp_path / "export")]
    # The smoke run has 15 or 16 steps per epoch (each length bucket drops its last partial
    # batch): back up every 4 steps, die after 10.
    run_example(
        "finetune_bert.py", output, *export, "--backup-every", "4", "--kill-after-steps", "10",
        expect_returncode=3,
    )
    assert os.path.isfile(output / "backup" / "latest.weights.h5")
    assert not os.path.exists(output / "metrics.json")

    run_example("finetune_bert.py", output, *export, "--backup-every", "4")
    metrics = read_metrics(output)
    # It went on from the last backup (step 8), not from step 0. Keras' BackupAndRestore
    # restarts the interrupted epoch from its first batch, with the backed-up weights and
    # optimizer state: 8 steps kept, then the epoch's steps.
    steps_per_epoch = _smoke_steps_per_epoch(output)
    assert 15 <= steps_per_epoch <= 16
    assert metrics["initial_step"] == 8
    assert metrics["steps_per_epoch"] == steps_per_epoch
    assert metrics["train_steps"] == 8 + steps_per_epoch
    assert not os.path.exists(output / "backup")  # removed once training finished
    assert metrics["init"] == "scratch" and metrics["smoke"]
    assert_finite(metrics, "dev_accuracy", "dev_loss")
    assert 0 <= metrics["dev_accuracy"] <= 1
    assert_pictures(metrics)
    loaded = load_export(metrics, signatures=("serving_default", "classify"))
    assert metrics["export"]["classify_labels_match"]
    outputs = loaded.signatures["classify"](
        token_ids=np.array([[1, 7, 2]], "int32"),
        segment_ids=np.zeros((1, 3), "int32"),
        padding_mask=np.ones((1, 3), "int32"),
    )
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_finetune_bert_smoke_reads_the_same_sentences_through_tfds(tmp_path):
    """--tfds: the sentences come through the local_sst2 TFDS builder; the vocabulary and the
    length buckets are those of the files' first training sentences."""
    from keras_transformers.data import bert as bert_data

    output, metrics = run_through_tfds("finetune_bert.py", tmp_path, "local_sst2")
    sentences, _ = bert_data.read_sst2(os.path.join(SHARED_DATA, "sst2", "train.tsv"))
    expected = bert_data.word_piece_vocabulary(sentences[:512], 500)
    with open(output / "vocab.txt", encoding="utf-8") as f:
        assert f.read().split("\n")[:-1] == expected
    assert (metrics["train_sentences"], metrics["dev_sentences"]) == (512, 128)
    assert metrics["steps_per_epoch"] == metrics["train_steps"] == _smoke_steps_per_epoch(output)
    assert_finite(metrics, "dev_accuracy", "dev_loss")
