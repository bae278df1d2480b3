"""SavedModel export for TensorFlow Serving, from a model on any Keras backend.

On TensorFlow the model's own graph is traced; on JAX and torch the model is saved
(`.keras`), rebuilt from the same weights in a subprocess on the TensorFlow backend and
exported there. Either way the written SavedModel is loaded back and its signatures must
reproduce the source model's outputs before the version folder appears.
"""

import contextlib
import contextvars
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np

from keras_transformers.export.signatures import (
    GENERATION_OPTIONS,
    SIGNATURES,
    check_signatures,
    describe,
)

# float32 exports must match the source model to 1e-5 (plus 1e-5 relative, for large
# logits); a half-precision policy rounds differently on each backend.
TOLERANCES = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export_saved_model(
    model,
    export_dir,
    version=1,
    overwrite=False,
    signatures=None,
    max_sequence_length=None,
    generation=None,
):
    """Exports a keras_transformers model as a versioned SavedModel for TF Serving.

    Writes `export_dir/<version>/` (saved_model.pb and variables/), the layout TF
    Serving watches. Signatures (method `tensorflow/serving/predict`):

    - `serving_default`, every model: inputs named as the model's (int32 token
      ids, segment ids, padding masks and mask positions of shape (batch,
      length); float32 `images` (batch, height, width, channels)), any batch and
      length up to `max_sequence_length`; outputs named `logits` (BERT backbone:
      `sequence_output`, `pooled_output`; pretraining: `mlm_logits`,
      `nsp_logits`; ViT without head: `sequence_output`), float32.
    - `classify`, BERT classifiers and ViT with a head: `probabilities` (softmax,
      float32) and `label` (int64 argmax).
    - `generate`, GPT-2 (and the encoder-decoder Transformer when `generation`
      gives its `start_token_id`): the KV-cached decoding loop of
      `keras_transformers.generation` inside the graph. Inputs: the prompts
      (GPT-2 `token_ids`, `padding_mask`, right-padded; Transformer
      `encoder_token_ids`, `encoder_padding_mask`), an int32 scalar
      `max_new_tokens` and, for a sampling sampler, an int32 scalar `seed`;
      outputs int32 `token_ids` and `padding_mask`, those of
      `generation.generate` (greedy: token for token).

    Inside each signature, asserts reject (with an InvalidArgumentError naming the
    input) a wrong rank, a sequence longer than `max_sequence_length`, mismatched
    shapes, token ids outside the vocabulary, mask positions outside the sequence,
    image sizes that are not multiples of the patch size, and a generated output
    longer than `max_sequence_length`; the TensorSpecs reject another dtype.
    Nothing is truncated.

    Backends: on TensorFlow the model is traced directly. On JAX and torch it is
    saved to a temporary `.keras` file and rebuilt in a subprocess with
    `KERAS_BACKEND=tensorflow`, which exports it. In both cases the SavedModel is
    then loaded, its signatures are run on probe inputs and compared with the
    source model's outputs on the source backend (atol and rtol 1e-5 in float32);
    a difference raises and leaves no version folder behind. The export is
    written beside its destination and moved into place when verified, so TF
    Serving never sees a partial version.

    Args:
        model: a model built by `keras_transformers.models` (`gpt2`,
            `transformer`, `bert` and its heads, `vit`).
        export_dir: the model's base folder (TF Serving's `base_path`), e.g.
            "saved_models/gpt2".
        version: positive int, the version folder's name.
        overwrite: whether to replace a non-empty version folder.
        signatures: names of the signatures to export (default: all the model
            has); must include "serving_default".
        max_sequence_length: the longest sequence accepted; defaults to the
            position table's size (GPT-2, BERT), which it may not exceed.
            Required for `transformer` models (sinusoids have no table).
        generation: dict of the `generate` signature's fixed settings, arguments
            of `generation.generate`: "sampler" (default "greedy"),
            "temperature", "top_k", "top_p", "num_beams", "length_penalty",
            "stop_token_ids", "start_token_id" (required for a Transformer).

    Returns:
        The path of the version folder, as a string.

    Raises:
        ValueError: naming the argument, for a model that is not a built
            keras_transformers model, a version that is not a positive int, a
            non-empty version folder without `overwrite`, or a signature the
            model does not have.
        RuntimeError: when the exported signatures do not reproduce the model.

    Example:

    >>> import os, tempfile
    >>> from keras_transformers.models import gpt2
    >>> model = gpt2.gpt2(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=4,
    ...                   intermediate_dim=8, max_sequence_length=6)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = export_saved_model(model, os.path.join(folder, "gpt2"), version=3)
    ...     print(os.path.relpath(path, folder), sorted(os.listdir(path)))
    gpt2/3 ['assets', 'fingerprint.pb', 'saved_model.pb', 'variables']
    """
    spec = describe(model, max_sequence_length)
    spec = dataclasses.replace(spec, generation=_check_generation(spec, generation))
    names = check_signatures(spec, signatures)
    if generation is not None and "generate" not in names:
        raise ValueError(
            "`generation` configures the `generate` signature, which is not exported. "
            f"Received: generation={generation!r}, signatures={signatures!r}"
        )
    version_dir = _version_dir(export_dir, version, overwrite)
    probes = {name: SIGNATURES[name].probe_inputs(spec) for name in names}
    expected = {name: SIGNATURES[name].reference(model, spec, probes[name]) for name in names}

    os.makedirs(export_dir, exist_ok=True)
    # TF Serving only loads folders named by a number: it ignores this one until the rename.
    staging = tempfile.mkdtemp(prefix=f".{version}-export-", dir=export_dir)
    try:
        path = os.path.join(staging, "saved_model")
        if keras.backend.backend() == "tensorflow":
            write_saved_model(model, spec, names, path)
            outputs = run_signatures(path, probes)
        else:
            outputs = _export_in_subprocess(model, spec, names, path, probes)
        _compare(expected, outputs, TOLERANCES.get(_compute_dtype(model), 5e-2))
        if os.path.exists(version_dir):
            shutil.rmtree(version_dir)
        os.replace(path, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir


def _check_generation(spec, generation):
    if generation is None:
        return {}
    if not isinstance(generation, dict) or not set(generation) <= set(GENERATION_OPTIONS):
        raise ValueError(
            f"`generation` must be a dict with keys among {list(GENERATION_OPTIONS)}. "
            f"Received: generation={generation!r}"
        )
    if spec.kind not in SIGNATURES["generate"].kinds:
        raise ValueError(
            f"`generation` applies to models with a `generate` signature "
            f"({', '.join(SIGNATURES['generate'].kinds)}). Received: generation={generation!r} "
            f"for a {spec.kind} model"
        )
    if generation.get("sampler") == "beam":
        # Beam search keeps fixed-size state, so it needs a static batch size; a serving
        # signature takes any batch size.
        raise ValueError(
            "`generation` cannot use sampler='beam' in an export: beam search needs a static "
            "batch size and the `generate` signature takes any. Use it from Python "
            f"(generation.generate). Received: generation={generation!r}"
        )
    return dict(generation)


def _version_dir(export_dir, version, overwrite):
    if not isinstance(export_dir, (str, os.PathLike)):
        raise ValueError(f"`export_dir` must be a path. Received: export_dir={export_dir!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version <= 0:
        raise ValueError(f"`version` must be a positive int. Received: version={version!r}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` must be a bool. Received: overwrite={overwrite!r}")
    version_dir = os.path.join(os.fspath(export_dir), str(version))
    if os.path.isfile(version_dir) or (os.path.isdir(version_dir) and os.listdir(version_dir)):
        if not overwrite:
            raise ValueError(
                f"The version folder {version_dir!r} is not empty: pass overwrite=True to "
                f"replace it, or another version. Received: export_dir={export_dir!r}, "
                f"version={version}"
            )
        if os.path.isfile(version_dir):
            raise ValueError(
                f"The version folder {version_dir!r} is a file. Received: "
                f"export_dir={export_dir!r}, version={version}"
            )
    return version_dir


def _compute_dtype(model):
    dtypes = {
        layer.dtype_policy.compute_dtype for layer in model.layers if layer.weights
    } or {"float32"}
    return "float32" if dtypes == {"float32"} else sorted(dtypes - {"float32"})[0]


def write_saved_model(model, spec, signature_names, path):
    """Traces the signatures of a model on the TensorFlow backend and writes the SavedModel.

    Keras' `ExportArchive` does what TF Serving needs here: it adds each endpoint as
    a `tf.function` with our input signature (dict inputs keep their TensorSpec
    names, dict outputs their keys), saves the variables those functions use and
    every endpoint as a signature with method `tensorflow/serving/predict`. The
    model is not `track`ed: that only adds lookup tables (our models have none) and
    walks every layer's functions, a third of the export time.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`write_saved_model` runs on the TensorFlow backend (`export_saved_model` "
            f"handles the others). Received: backend={keras.backend.backend()!r}"
        )
    archive = keras.export.ExportArchive()
    for name in signature_names:
        signature = SIGNATURES[name]
        archive.add_endpoint(
            name, signature.function(model, spec), input_signature=signature.input_signature(spec)
        )
    archive.write_out(path, verbose=False)


def run_signatures(path, probes):
    """Loads a SavedModel as TF Serving would and runs signatures on numpy inputs.

    Args:
        path: the SavedModel folder.
        probes: signature name -> dict of numpy inputs.

    Returns:
        signature name -> dict of numpy outputs.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    outputs = {}
    for name, inputs in probes.items():
        results = loaded.signatures[name](**{key: tf.constant(value) for key, value in inputs.items()})
        outputs[name] = {key: value.numpy() for key, value in results.items()}
    return outputs


def _compare(expected, outputs, tolerance):
    for name, reference in expected.items():
        got = outputs.get(name, {})
        if sorted(got) != sorted(reference):
            raise RuntimeError(
                f"The exported `{name}` signature has outputs {sorted(got)}, expected "
                f"{sorted(reference)}."
            )
        for key, value in reference.items():
            if got[key].shape != value.shape or got[key].dtype != value.dtype:
                raise RuntimeError(
                    f"The exported `{name}` output `{key}` has shape {got[key].shape} and "
                    f"dtype {got[key].dtype}; the model gives {value.shape}, {value.dtype}."
                )
            if value.dtype.kind == "f":
                close = np.allclose(got[key], value, atol=tolerance, rtol=tolerance)
            else:
                close = np.array_equal(got[key], value)
            if not close:
                difference = np.max(np.abs(got[key].astype("float64") - value))
                raise RuntimeError(
                    f"The exported `{name}` output `{key}` differs from the model's by up to "
                    f"{difference:.3g} (tolerance {tolerance}): the export was not written."
                )


def _export_in_subprocess(model, spec, signature_names, path, probes):
    with tempfile.TemporaryDirectory(prefix="keras_transformers_export_") as folder:
        model.save(os.path.join(folder, "model.keras"))
        for name, inputs in probes.items():
            np.savez(os.path.join(folder, f"probes_{name}.npz"), **inputs)
        job = dict(
            folder=folder,
            path=path,
            signatures=signature_names,
            max_sequence_length=None if spec.kind == "vit" else spec.max_sequence_length,
            generation=spec.generation,
        )
        with open(os.path.join(folder, "job.json"), "w") as f:
            json.dump(job, f)
        worker = _WORKER.get()
        if worker is None:
            with _TensorFlowWorker() as worker:
                worker.run(folder)
        else:
            worker.run(folder)
        outputs = {}
        for name in signature_names:
            with np.load(os.path.join(folder, f"outputs_{name}.npz")) as data:
                outputs[name] = {key: data[key] for key in data.files}
        return outputs


@contextlib.contextmanager
def export_session():
    """Shares one TensorFlow subprocess between the exports made inside the block.

    On JAX and torch each `export_saved_model` call otherwise starts its own
    subprocess, and importing TensorFlow there takes seconds; inside the block the
    first export starts one, the others reuse it, and it ends with the block. On
    the TensorFlow backend (no subprocess) and inside another session this does
    nothing.

    Example:

    >>> import os, tempfile
    >>> from keras_transformers.models import vit
    >>> model = vit.vit(image_size=8, patch_size=4, num_layers=1, num_heads=2,
    ...                 hidden_dim=8, intermediate_dim=16, num_classes=3)
    >>> with tempfile.TemporaryDirectory() as folder, export_session():
    ...     paths = [export_saved_model(model, os.path.join(folder, "vit"), version=v)
    ...              for v in (1, 2)]
    ...     print(sorted(os.listdir(os.path.join(folder, "vit"))))
    ['1', '2']
    """
    if keras.backend.backend() == "tensorflow" or _WORKER.get() is not None:
        yield
        return
    with _TensorFlowWorker() as worker:
        token = _WORKER.set(worker)
        try:
            yield
        finally:
            _WORKER.reset(token)


_WORKER = contextvars.ContextVar("keras_transformers_export_worker", default=None)
_DONE = "keras_transformers.export: done"


class _TensorFlowWorker:
    """A subprocess on the TensorFlow backend that runs export jobs (folders) in turn.

    Jobs go in one per line on its stdin; it answers `_DONE <folder>` on stdout (other
    lines there are whatever TensorFlow prints) after writing the outputs, or the
    traceback to `<folder>/error.txt`. Started at the first job, ended by `close`.
    """

    def __init__(self):
        self.process = None
        self.stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _start(self):
        pythonpath = os.environ.get("PYTHONPATH")
        env = dict(
            os.environ,
            KERAS_BACKEND="tensorflow",
            PYTHONPATH=_PACKAGE_ROOT + (os.pathsep + pythonpath if pythonpath else ""),
            # The source backend may hold the accelerator: TensorFlow exports on the CPU.
            CUDA_VISIBLE_DEVICES="-1",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from keras_transformers.export.saved_model import "
             "_worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
        )

    def run(self, folder):
        if self.process is None:
            self._start()
        try:
            self.process.stdin.write(folder + "\n")
            self.process.stdin.flush()
            for line in self.process.stdout:
                if line.rstrip("\n") == f"{_DONE} {folder}":
                    break
            else:
                raise BrokenPipeError
        except (BrokenPipeError, OSError):
            self.stderr.seek(0)
            raise RuntimeError(
                "The TensorFlow subprocess that exports the model stopped:\n"
                + self.stderr.read()[-4000:]
            ) from None
        error = os.path.join(folder, "error.txt")
        if os.path.exists(error):
            with open(error) as f:
                raise RuntimeError(
                    "Rebuilding the model on the TensorFlow backend to export it failed:\n"
                    + f.read()[-4000:]
                )

    def close(self):
        if self.process is None:
            return
        try:
            self.process.stdin.close()
            self.process.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self.process.stdout.close()
            self.stderr.close()
            self.process = None


def _worker_main():
    """The TensorFlow subprocess: rebuild, export and run the probes of each job."""
    import traceback

    for line in sys.stdin:
        folder = line.rstrip("\n")
        try:
            _run_job(folder)
        except Exception:
            with open(os.path.join(folder, "error.txt"), "w") as f:
                f.write(traceback.format_exc())
        print(f"{_DONE} {folder}", flush=True)


def _run_job(folder):
    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    model = keras.saving.load_model(os.path.join(folder, "model.keras"), compile=False)
    spec = dataclasses.replace(
        describe(model, job["max_sequence_length"]), generation=job["generation"]
    )
    write_saved_model(model, spec, job["signatures"], job["path"])
    probes = {}
    for name in job["signatures"]:
        with np.load(os.path.join(folder, f"probes_{name}.npz")) as data:
            probes[name] = {key: data[key] for key in data.files}
    for name, outputs in run_signatures(job["path"], probes).items():
        np.savez(os.path.join(folder, f"outputs_{name}.npz"), **outputs)
