"""Runs an example script's `--smoke` run in a subprocess and reads what it wrote."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.testing import BACKEND, SHARED_DATA

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke_marks(data_folder, reason):
    """The marks of an example's smoke test: JAX only (CI runs them on one backend), and
    only where ../shared/data holds `data_folder`."""
    return [
        pytest.mark.skipif(BACKEND != "jax", reason="the example smoke runs run on one backend (jax)"),
        pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, data_folder)), reason=reason),
    ]


def run_example(script, output, *args, expect_returncode=0, timeout=600):
    """Runs examples/<script> --smoke --output <output> <args> on this test run's backend."""
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "examples", script), "--smoke", "--output", str(output), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == expect_returncode, (result.stdout[-5000:], result.stderr[-5000:])
    return result


def run_through_tfds(script, tmp_path, builder):
    """The smoke run of examples/<script> with --tfds, its data set prepared by the TFDS
    `builder` under tmp_path/tfds (checked to be there): (output folder, metrics)."""
    pytest.importorskip("tensorflow_datasets")
    output = tmp_path / "run"
    run_example(script, output, "--tfds", "--tfds-dir", str(tmp_path / "tfds"),
                "--export-dir", str(tmp_path / "export"))
    assert os.path.isdir(tmp_path / "tfds" / builder / "1.0.0")
    return output, read_metrics(output)


def read_metrics(output):
    with open(os.path.join(output, "metrics.json"), encoding="utf-8") as f:
        return json.load(f)


def assert_finite(metrics, *names):
    for name in names:
        value = metrics[name]
        assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)


def assert_pictures(metrics):
    assert metrics["pictures"]
    for path in metrics["pictures"].values():
        assert os.path.getsize(path) > 1000, path
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def load_export(metrics, signatures=("serving_default",)):
    """Loads the exported SavedModel with TensorFlow alone and checks its signatures."""
    import tensorflow as tf

    path = metrics["export"]["path"]
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    loaded = tf.saved_model.load(path)
    for name in signatures:
        assert name in loaded.signatures, sorted(loaded.signatures)
    assert metrics["export"]["max_abs_difference"] < 1e-4
    return loaded
