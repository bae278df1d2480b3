"""The smoke run of examples/finetune_bert.py, killed mid-epoch and resumed from its backup."""

import os

import numpy as np

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, smoke_marks,
)

pytestmark = smoke_marks("sst2", reason="no local SST-2 copy")


def test_finetune_bert_smoke_resumes_after_a_kill(tmp_path):
    output, export = tmp_path / "run", ["--export-dir", str(tmp_path / "export")]
    # The smoke run has 16 steps per epoch: back up every 4 steps, die after 10.
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
    # optimizer state: 8 steps kept, then the epoch's 16 steps.
    assert metrics["initial_step"] == 8
    assert metrics["train_steps"] == 8 + 16
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
