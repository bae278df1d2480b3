"""The smoke run of examples/pretrain_bert.py: MLM + NSP, held-out accuracies, backbone, export."""

import keras

import keras_transformers.models  # noqa: F401  (registers the classes backbone.keras holds)

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, smoke_marks,
)

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
