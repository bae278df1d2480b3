"""Loads exported SavedModels the way TF Serving does, importing only TensorFlow.

    python tests/export/serving_check.py JOB.json

JOB.json: {"models": {name: SavedModel folder}, "calls": [call, ...], "out": folder}. Each
call is {"id", "model", "signature", "mode", and "npz" (a file of input arrays, used with
their own dtypes) or "json" (a TF Serving REST predict body, its values converted to the
signature's dtypes as the REST server does)}. Mode "signature" runs
`tf.saved_model.load(...).signatures[name]`; mode "session" feeds the signature's tensors
through a TF1 session without Python's shape checks, like TF Serving's C++ Session::Run.

Writes out/results.json: per model, each signature's method name, input and output names,
dtypes and shapes (from saved_model.pb); per call, its outputs (out/<id>.npz) or the error's
type and message; and the Keras modules found in sys.modules (there must be none).

Keras and keras_transformers are hidden from the importer before TensorFlow is imported, as
on a serving host where they are not installed (installed, `import tensorflow` imports Keras
for `tf.keras`): the SavedModels must load and run without them.
"""

import json
import os
import sys

_HIDDEN = ("keras", "keras_transformers", "tf_keras")


class _Hide:
    """Wraps an import finder so that the hidden packages look uninstalled."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [_Hide(finder) for finder in sys.meta_path]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2, saved_model_pb2  # noqa: E402


def signature_defs(folder):
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    (meta_graph,) = saved_model.meta_graphs
    assert list(meta_graph.meta_info_def.tags) == ["serve"], meta_graph.meta_info_def.tags

    def tensors(infos):
        return {
            name: [tf.as_dtype(info.dtype).name, [dim.size for dim in info.tensor_shape.dim]]
            for name, info in infos.items()
        }

    return {
        name: {
            "method": signature.method_name,
            "inputs": tensors(signature.inputs),
            "outputs": tensors(signature.outputs),
        }
        for name, signature in meta_graph.signature_def.items()
        if not name.startswith("__")
    }


def json_inputs(body, definition):
    inputs = {}
    for name, value in body["inputs"].items():
        dtype = np.dtype(definition["inputs"][name][0]) if name in definition["inputs"] else None
        array = np.asarray(value)
        if dtype is not None and dtype.kind in "iu" and array.dtype.kind not in "iu":
            raise TypeError(f"JSON input {name} must be integers for {dtype}")
        inputs[name] = array.astype(dtype) if dtype is not None else array
    return inputs


def run_signature(loaded, signature, inputs):
    results = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {key: value.numpy() for key, value in results.items()}


def run_session(folder, signature, inputs):
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], folder)
        definition = meta_graph.signature_def[signature]
        names = sorted(inputs)
        outputs = sorted(definition.outputs)
        run = session._make_callable_from_options(  # no client-side shape check
            config_pb2.CallableOptions(
                feed=[definition.inputs[name].name for name in names],
                fetch=[definition.outputs[name].name for name in outputs],
            )
        )
        return dict(zip(outputs, run(*[inputs[name] for name in names])))


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    results = {"signature_defs": {}, "calls": {}}
    loaded = {}
    for name, folder in job["models"].items():
        results["signature_defs"][name] = signature_defs(folder)
        loaded[name] = tf.saved_model.load(folder)
    for call in job["calls"]:
        definition = results["signature_defs"][call["model"]][call["signature"]]
        try:
            if "json" in call:
                inputs = json_inputs(call["json"], definition)
            else:
                with np.load(call["npz"]) as data:
                    inputs = {key: data[key] for key in data.files}
            if call.get("mode", "signature") == "session":
                outputs = run_session(job["models"][call["model"]], call["signature"], inputs)
            else:
                outputs = run_signature(loaded[call["model"]], call["signature"], inputs)
            np.savez(os.path.join(job["out"], f"{call['id']}.npz"), **outputs)
            results["calls"][call["id"]] = {"outputs": sorted(outputs)}
        except Exception as error:  # recorded for the test to check
            results["calls"][call["id"]] = {"error": type(error).__name__, "message": str(error)}
    results["keras_modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("keras", "keras_transformers")
    )
    with open(os.path.join(job["out"], "results.json"), "w") as f:
        json.dump(results, f)
    if results["keras_modules"]:
        sys.exit(f"keras was imported: {results['keras_modules'][:5]}")


if __name__ == "__main__":
    main(sys.argv[1])
