"""What the example scripts share: their common flags, fit callbacks, export check and outputs.

The scripts import it as `common` (run as `python examples/<script>.py`, their folder comes
first on `sys.path`). It is glue for these scripts only: what a user would reuse lives in the
package (`keras_transformers.callbacks`, `keras_transformers.export`).
"""

import json
import os
import sys

import keras
import numpy as np

from keras_transformers.callbacks import StopAfterSteps, resumable_callbacks, tensorboard_available
from keras_transformers.optimizers import AdamW

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA_DIR = os.path.join(REPO_ROOT, "..", "shared", "data")
# The exit code of a run ended by --interrupt-after-steps (what the resume tests expect).
INTERRUPTED = 3


def add_common_arguments(
    parser, *, data_help, output, export_dir, backup_every, epochs=None, batch_size=None
):
    """Adds the flags every example takes; returns the group `--smoke` is in (for `--quick`).

    --data-dir, --output, --export-dir, --export-version (alias --version), --epochs,
    --batch-size, --backup-every, --seed, --smoke, and --interrupt-after-steps (alias
    --kill-after-steps), which ends the process as a kill would, to test resuming.
    `epochs` and `batch_size` are the defaults (None: the script fills them in from a preset).
    """
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=data_help)
    parser.add_argument("--output", default=output,
                        help="run folder: logs, backup, checkpoints, metrics.json, PNGs")
    parser.add_argument("--export-dir", default=export_dir,
                        help="SavedModel base folder; the version goes below it")
    parser.add_argument("--export-version", "--version", dest="export_version", type=int, default=1,
                        help="the SavedModel's version folder")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--backup-every", type=int, default=backup_every, help="steps between backups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interrupt-after-steps", "--kill-after-steps", dest="interrupt_after_steps",
                        type=int, help="end the process after this optimizer step (to test resuming)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="a tiny run for CI (under a minute)")
    return size


def add_tfds_arguments(parser, builder):
    """Adds --tfds (read the data through the TFDS builder `builder` of
    `keras_transformers.data.tfds_builders`: the same records, prepared once from the files
    under --data-dir) and --tfds-dir (TFDS's data folder for the prepared copy)."""
    parser.add_argument("--tfds", action="store_true",
                        help=f"read the same records through the TFDS builder {builder}, "
                             "prepared once from --data-dir's files into --tfds-dir")
    parser.add_argument("--tfds-dir", default=None,
                        help="TFDS data folder (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def fill_from_preset(args, preset):
    """Sets each flag of `preset` that the command line left unset (None)."""
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def bert_optimizer(learning_rate, steps, warmup_fraction):
    """AdamW as BERT's (weight decay 0.01, epsilon 1e-6), with linear warmup over
    `warmup_fraction` of `steps` to `learning_rate`, then cosine decay (BERT decays linearly).
    LayerNorm scales, biases and embeddings are not decayed, as in BERT's optimizer. Ours:
    Keras' AdamW update, fused into one kernel on PyTorch's CPU."""
    warmup = max(1, int(warmup_fraction * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=learning_rate, warmup_steps=warmup
    )
    optimizer = AdamW(schedule, weight_decay=0.01, epsilon=1e-6)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "embeddings"])
    return optimizer


def command_line(script, argv):
    """The command that ran, for metrics.json."""
    return f"python examples/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def local_or_download(data_dir, folder, name, base_url):
    """<data_dir>/<folder>/<name>, fetched from `base_url` + name into that folder when absent."""
    path = os.path.join(data_dir, folder, name)
    if os.path.exists(path):
        return path
    return keras.utils.get_file(name, base_url + name, cache_dir=os.path.abspath(data_dir), cache_subdir=folder)


def fit_callbacks(args, **checkpoint_options):
    """Backups for resuming, the initial step, a checkpoint, TensorBoard logs when installed,
    and --interrupt-after-steps: `(callbacks, initial_step)` (see `resumable_callbacks`)."""
    callbacks, initial_step = resumable_callbacks(
        args.output, backup_every=args.backup_every, verbose=1, **checkpoint_options
    )
    if not tensorboard_available():
        print("TensorBoard logs skipped: the tensorflow and tensorboard packages are needed")
    if args.interrupt_after_steps:
        callbacks.append(StopAfterSteps(args.interrupt_after_steps, exit_code=INTERRUPTED, verbose=1))
    return callbacks, initial_step


def export_and_check(model, inputs, args, classify=False, **export_options):
    """Exports for TF Serving, reloads the SavedModel with TensorFlow and compares it with Keras.

    `serving_default` must reproduce each model output (`logits` for a single output) within
    1e-4 on `inputs`, and with `classify=True` the `classify` signature's labels must be the
    argmax of the logits; else RuntimeError. Returns {"path", "max_abs_difference"} (and
    "labels_match" with `classify`).
    """
    import tensorflow as tf

    from keras_transformers.export import export_saved_model

    path = export_saved_model(
        model, args.export_dir, version=args.export_version, overwrite=True, **export_options
    )
    inputs = {name: np.asarray(x) for name, x in inputs.items()}
    expected = model(inputs, training=False)
    if not isinstance(expected, dict):
        expected = {"logits": expected}
    expected = {name: keras.ops.convert_to_numpy(x) for name, x in expected.items()}
    loaded = tf.saved_model.load(path)
    tensors = {name: tf.constant(x) for name, x in inputs.items()}
    served = loaded.signatures["serving_default"](**tensors)
    difference = max(float(np.max(np.abs(served[name].numpy() - x))) for name, x in expected.items())
    result = {"path": path, "max_abs_difference": difference}
    checked = "serving_default"
    if classify:
        labels = loaded.signatures["classify"](**tensors)["label"].numpy()
        result["labels_match"] = bool(np.array_equal(labels, expected["logits"].argmax(-1)))
        checked += " and classify"
    if not difference < 1e-4 or not result.get("labels_match", True):
        raise RuntimeError(f"the SavedModel differs from the model: {result}")
    print(f"exported {path}; {checked} reproduce the model (max |difference| {difference:.1e})")
    return result


def write_metrics(output, metrics, summary=()):
    """<output>/metrics.json; prints the `summary` fields."""
    path = os.path.join(output, "metrics.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    if summary:
        print(json.dumps({name: metrics[name] for name in summary}, default=float))
    print(f"wrote {path}")
