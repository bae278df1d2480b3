"""The smoke run of examples/train_gpt2.py, killed mid-run and resumed (JAX only in CI)."""

import os

import numpy as np

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, smoke_marks,
)

pytestmark = smoke_marks("tinyshakespeare", reason="no local Tiny Shakespeare")


def test_train_gpt2_smoke_resumes_after_a_kill(tmp_path):
    output, export = tmp_path / "run", tmp_path / "export"
    # The smoke run has 2 epochs of 8 steps; killed at step 10 (mid-epoch 2) after a
    # backup at step 10, it must restart from there, not from step 0.
    result = run_example("train_gpt2.py", output, "--export-dir", str(export), "--backup-every", "5",
                         "--interrupt-after-steps", "10", expect_returncode=3)
    assert "interrupted after step 10" in result.stdout
    assert not os.path.exists(output / "metrics.json")
    result = run_example("train_gpt2.py", output, "--export-dir", str(export), "--backup-every", "5")
    assert "training starts at optimizer step 10 (resumed)" in result.stdout
    metrics = read_metrics(output)
    # Epoch 2 runs again in full from the restored weights and optimizer state.
    assert metrics["initial_step"] == 10 and metrics["steps"] == 18
    assert metrics["smoke"] and metrics["backend"] == "jax"
    assert_finite(metrics, "train_loss", "validation_loss", "validation_perplexity")
    assert metrics["validation_loss"] < np.log(128)  # better than a uniform guess
    np.testing.assert_allclose(metrics["validation_perplexity"], np.exp(metrics["validation_loss"]))
    assert metrics["sample"]["continuation"]
    assert set(metrics["pictures"]) == {"attention_maps", "attention_last_layer", "token_attention"}
    assert_pictures(metrics)
    assert os.path.isfile(output / "checkpoints" / "best.keras")
    loaded = load_export(metrics, signatures=("serving_default", "generate"))
    assert metrics["export"]["path"] == str(export / "1")
    logits = loaded.signatures["serving_default"](
        token_ids=np.array([[70, 105, 114]], "int32"), padding_mask=np.ones((1, 3), "int32"))["logits"]
    assert logits.shape == (1, 3, 128)
    # The example checked greedy `generate` against Python generate; here, in another process,
    # the reloaded signature continues the same prompt (8 tokens) with the same 8 tokens.
    tokens = np.array(metrics["export"]["generate_tokens"], "int32")
    assert tokens.shape == (16,)
    generated = loaded.signatures["generate"](
        token_ids=tokens[None, :8], padding_mask=np.ones((1, 8), "int32"), max_new_tokens=np.int32(8))
    np.testing.assert_array_equal(generated["token_ids"].numpy()[0], tokens)
