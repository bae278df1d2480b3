"""SavedModel export for TF Serving, proven the way TF Serving loads a model.

One export per model kind (module fixture, from this run's backend: on JAX and torch the
exporter rebuilds the model in a TensorFlow subprocess). Then one fresh process that imports
only TensorFlow (tests/export/serving_check.py) loads every SavedModel, reads its signature
definitions and runs every call below: probe inputs (compared here with the source model's
own outputs on this backend), the README's request bodies, and inputs that must be rejected.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

_TENSORFLOW_BEFORE = "tensorflow" in sys.modules
from keras_transformers.export import export_saved_model, export_session  # noqa: E402
from keras_transformers.export import signatures as signatures_module  # noqa: E402
from keras_transformers.generation import generate  # noqa: E402
from keras_transformers.models import from_preset  # noqa: E402
from keras_transformers.models.bert import bert_classifier  # noqa: E402
from tests.testing import BACKEND, to_numpy  # noqa: E402

_EXPORT_IMPORTED_TENSORFLOW = not _TENSORFLOW_BEFORE and "tensorflow" in sys.modules
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
README = os.path.join(REPO_ROOT, "README.md")
MODELS_CONFIG = os.path.join(REPO_ROOT, "saved_models", "models.config")
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
MAX_LENGTHS = {"gpt2": 128, "transformer": 64, "bert": 512, "bert_classifier": 512}
# Exported in the default run. The transformer's `generate` (exported with GENERATION) is
# proven in the slow run: its checks against Python `generate` compile several loops.
SIGNATURES = {
    "gpt2": ["serving_default", "generate"],
    "transformer": ["serving_default"],
    "bert": ["serving_default"],
    "bert_classifier": ["serving_default", "classify"],
    "vit": ["serving_default", "classify"],
}
ALL_SIGNATURES = dict(SIGNATURES, transformer=["serving_default", "generate"])
INT32_PAIR = ["int32", [-1, -1]]
GENERATION = {"start_token_id": 1}  # the transformer's; GPT-2 exports greedy generate as is


def build_models():
    """The README's presets (one block each, to trace faster) and export arguments."""
    backbone = from_preset("bert_tiny", num_layers=1)
    return {
        "gpt2": (from_preset("gpt2_tiny", num_layers=1), {}),
        "transformer": (
            from_preset("transformer_tiny", num_layers=1),
            {"max_sequence_length": MAX_LENGTHS["transformer"]},
        ),
        "bert": (backbone, {}),
        "bert_classifier": (bert_classifier(backbone, num_classes=3), {}),
        "vit": (from_preset("vit_tiny", num_layers=1), {}),
    }


def _text_inputs(rng, prefix, batch, length, vocabulary_size, segments=False):
    ids = rng.integers(0, vocabulary_size, size=(batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[-1, length // 2 :] = 0
    inputs = {f"{prefix}token_ids": ids, f"{prefix}padding_mask": mask}
    if segments:
        inputs["segment_ids"] = (np.arange(length)[None] >= length // 2).repeat(batch, 0).astype("int32")
    return inputs


def probe_cases():
    """(model, probe name) -> inputs: small padded batches, and the longest accepted sequence."""
    rng = np.random.default_rng(7)
    cases = {}
    for name, vocabulary in (("gpt2", 1024), ("bert", 30522), ("bert_classifier", 30522)):
        segments = name != "gpt2"
        cases[name, "batch"] = _text_inputs(rng, "", 3, 9, vocabulary, segments)
        cases[name, "longest"] = _text_inputs(rng, "", 1, MAX_LENGTHS[name], vocabulary, segments)
    for probe, (source, target) in {"batch": (6, 4), "longest": (64, 64)}.items():
        batch = 3 if probe == "batch" else 1
        cases["transformer", probe] = {
            **_text_inputs(rng, "encoder_", batch, source, 1000),
            **_text_inputs(rng, "decoder_", batch, target, 1000),
        }
    cases["vit", "batch"] = {"images": rng.normal(size=(2, 32, 32, 3)).astype("float32")}
    cases["vit", "resized"] = {"images": rng.normal(size=(1, 16, 24, 3)).astype("float32")}
    # Prompts for generate (GPT-2's right-padded, of lengths 4 and 1), shaped like the
    # README's requests so that Python `generate` compiles once for both; the longest output.
    prompts = rng.integers(1, 1024, size=(2, 4)).astype("int32")
    mask = (np.arange(4)[None] < np.array([[4], [1]])).astype("int32")
    cases["gpt2", "prompts"] = dict(token_ids=prompts * mask, padding_mask=mask, max_new_tokens=np.int32(8))
    cases["gpt2", "longest_output"] = dict(
        token_ids=rng.integers(1, 1024, size=(1, 125)).astype("int32"),
        padding_mask=np.ones((1, 125), "int32"),
        max_new_tokens=np.array(3, "int32"),
    )
    source = _text_inputs(rng, "encoder_", 2, 4, 1000)
    cases["transformer", "prompts"] = dict(source, max_new_tokens=np.array(10, "int32"))
    return cases


PROBES = probe_cases()
SLOW_PROBES = (("gpt2", "longest_output"), ("transformer", "prompts"))


def _probe_ids(signatures, slow):
    return [
        (model, signature, probe)
        for (model, probe) in PROBES
        for signature in signatures[model]
        if (signature == "generate") == ("max_new_tokens" in PROBES[model, probe])
        and ((model, probe) in SLOW_PROBES) == slow
    ]


PROBE_IDS = _probe_ids(SIGNATURES, slow=False)
SLOW_PROBE_IDS = _probe_ids(ALL_SIGNATURES, slow=True)


def _ones(*shape, dtype="int32"):
    return np.ones(shape, dtype)


def _reject(model, signature, inputs, text, mode="signature", error="InvalidArgumentError"):
    """A request that must fail: mode "signature" (tf.saved_model.load) or "session" (fed
    as TF Serving feeds, without client-side shape checks)."""
    return (model, signature, mode, inputs, error, text)


def rejection_cases():
    """id -> (model, signature, mode, inputs, error type, text the message must contain)."""
    ids, long_ids = _ones(1, 4), _ones(1, 129)
    source = dict(encoder_token_ids=ids, encoder_padding_mask=ids)
    transformer = dict(source, decoder_token_ids=ids, decoder_padding_mask=ids)
    bert_513 = dict(token_ids=_ones(1, 513), segment_ids=0 * _ones(1, 513), padding_mask=_ones(1, 513))
    too_long = "`token_ids` may have at most max_sequence_length=128 positions"
    prompt = dict(token_ids=ids, padding_mask=ids)
    output_too_long = "may have at most max_sequence_length={} positions. Received: output length] [{}]"
    return {
        "too_long": _reject("gpt2", "serving_default", dict(token_ids=long_ids, padding_mask=long_ids), too_long),
        "too_long_session": _reject(
            "gpt2", "serving_default", dict(token_ids=long_ids, padding_mask=long_ids), too_long, "session"
        ),
        "too_long_decoder": _reject(
            "transformer", "serving_default",
            dict(transformer, decoder_token_ids=_ones(1, 65), decoder_padding_mask=_ones(1, 65)),
            "`decoder_token_ids` may have at most max_sequence_length=64",
        ),
        "too_long_bert_classify": _reject(
            "bert_classifier", "classify", bert_513, "`token_ids` may have at most max_sequence_length=512"
        ),
        "rank_session": _reject(
            "gpt2", "serving_default", dict(token_ids=_ones(1, 2, 3), padding_mask=_ones(1, 2, 3)),
            "`token_ids` must have rank 2", "session",
        ),
        "rank_images_session": _reject(
            "vit", "classify", dict(images=_ones(32, 32, 3, dtype="float32")), "`images` must have rank 4",
            "session",
        ),
        "rank_signature": _reject(
            "gpt2", "serving_default", dict(token_ids=_ones(1, 2, 3), padding_mask=ids),
            "`token_ids` must have rank 2",
        ),
        "dtype_float_ids": _reject(
            "gpt2", "serving_default", dict(token_ids=ids.astype("float32"), padding_mask=ids), "int32"
        ),
        "dtype_int64_mask": _reject(
            "bert", "serving_default",
            dict(token_ids=ids, segment_ids=0 * ids, padding_mask=ids.astype("int64")), "int32",
        ),
        "dtype_int_images": _reject("vit", "serving_default", dict(images=_ones(1, 32, 32, 3)), "float"),
        "out_of_vocabulary": _reject(
            "gpt2", "serving_default", dict(token_ids=1024 * ids, padding_mask=ids),
            "`token_ids` must be less than 1024",
        ),
        "negative_segment": _reject(
            "bert", "serving_default", dict(token_ids=ids, segment_ids=-ids, padding_mask=ids),
            "`segment_ids` must be non-negative",
        ),
        "mask_shape": _reject(
            "gpt2", "serving_default", dict(token_ids=ids, padding_mask=_ones(1, 3)),
            "`padding_mask` must have the shape of `token_ids`",
        ),
        "batch_mismatch": _reject(
            "transformer", "serving_default",
            dict(transformer, decoder_token_ids=_ones(2, 4), decoder_padding_mask=_ones(2, 4)),
            "`decoder_token_ids` must have the batch size of `encoder_token_ids`",
        ),
        "image_size": _reject(
            "vit", "serving_default", dict(images=_ones(1, 30, 32, 3, dtype="float32")),
            "`images` must have a height that is a multiple of the patch size 4",
        ),
        "channels_session": _reject(
            "vit", "serving_default", dict(images=_ones(1, 32, 32, 1, dtype="float32")),
            "`images` must have 3 channels", "session",
        ),
        "generate_too_long": _reject(
            "gpt2", "generate",
            dict(token_ids=_ones(1, 126), padding_mask=_ones(1, 126), max_new_tokens=np.int32(3)),
            output_too_long.format(128, 129),
        ),
        "generate_left_padded": _reject(
            "gpt2", "generate",
            dict(token_ids=ids, padding_mask=np.array([[0, 1, 1, 1]], "int32"), max_new_tokens=np.int32(3)),
            "`padding_mask` must mark a prompt of at least one token at the start of every row",
        ),
        "generate_no_new_tokens": _reject(
            "gpt2", "generate", dict(prompt, max_new_tokens=np.int32(0)), "`max_new_tokens` must be >= 1"
        ),
        "generate_vector_session": _reject(
            "gpt2", "generate", dict(prompt, max_new_tokens=np.array([3, 4], "int32")),
            "`max_new_tokens` must be a scalar", "session",
        ),
        "generate_dtype": _reject("gpt2", "generate", dict(prompt, max_new_tokens=np.int64(3)), "int32"),
        # The transformer's `generate`: the slow run.
        "generate_too_long_transformer": _reject(
            "transformer", "generate", dict(source, max_new_tokens=np.int32(64)),
            output_too_long.format(64, 65),
        ),
    }


REJECTIONS = rejection_cases()
SLOW_REJECTIONS = {"generate_too_long_transformer": REJECTIONS.pop("generate_too_long_transformer")}


def readme_requests():
    """(model, body) for each REST request documented in the README's Serving section."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    pattern = r"POST http://localhost:8501/v1/models/(\w+):predict[^\n]*(?:\n[^\n`]+)*\n+```json\n(.*?)```"
    return [(model, json.loads(body)) for model, body in re.findall(pattern, text, re.DOTALL)]


def _source_outputs(model, signature, inputs):
    """The source model's outputs on this backend, as each signature should give them."""
    if signature == "generate":
        prompts = {key: value for key, value in inputs.items() if key != "max_new_tokens"}
        options = GENERATION if "encoder_token_ids" in prompts else {}
        outputs = generate(model, prompts, int(inputs["max_new_tokens"]), **options)
        return {key: value.astype("int32") for key, value in outputs.items()}
    # JAX compiles each eager op for each new shape; one compiled step is 4x faster.
    outputs = model.predict_on_batch(inputs) if BACKEND == "jax" else model(inputs, training=False)
    if signature == "classify":
        logits = to_numpy(outputs).astype("float64")
        probabilities = np.exp(logits - logits.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        return {"probabilities": probabilities, "label": logits.argmax(-1)}
    if isinstance(outputs, dict):
        return {key: to_numpy(value) for key, value in outputs.items()}
    return {"logits": to_numpy(outputs)}


def _serve(folder, paths, probe_ids, rejections, readme, probes=PROBES):
    """Runs every call in one fresh process that imports only TensorFlow (serving_check.py).

    Returns its results and a function from a call id to that call's outputs.
    """
    out = folder / "out"
    out.mkdir()
    calls = []
    for model, signature, probe in probe_ids:
        npz = out / f"probe-{model}-{probe}.npz"
        np.savez(npz, **probes[model, probe])
        calls.append(dict(id=f"{model}-{signature}-{probe}", model=model, signature=signature, npz=str(npz)))
    for case, (model, signature, mode, inputs, _, _) in rejections.items():
        npz = out / f"reject-{case}.npz"
        np.savez(npz, **inputs)
        calls.append(dict(id=f"reject-{case}", model=model, signature=signature, mode=mode, npz=str(npz)))
    for index, model, body in readme:
        calls.append(dict(id=f"readme-{index}", model=model, signature=_signature(body), json=body))
    (folder / "job.json").write_text(json.dumps(dict(models=paths, calls=calls, out=str(out))))
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "serving_check.py"), str(folder / "job.json")],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())

    def outputs(call_id):
        record = results["calls"][call_id]
        assert "error" not in record, f"{call_id}: {record}"
        with np.load(out / f"{call_id}.npz") as data:
            return {key: data[key] for key in data.files}

    return results, outputs


def _signature(body):
    return body.get("signature_name", "serving_default")


def _readme(signatures):
    """(index, model, body) of the README's requests to these signatures."""
    return [
        (index, model, body)
        for index, (model, body) in enumerate(readme_requests())
        if _signature(body) in signatures.get(model, ())
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    base = root / "saved_models"
    keras.utils.set_random_seed(0)
    models = build_models()
    # A stale version folder that overwrite=True must replace.
    (base / "vit" / "1").mkdir(parents=True)
    (base / "vit" / "1" / "stale.txt").write_text("old")
    paths = {}
    with export_session():  # on JAX and torch: one TensorFlow subprocess for the five
        for name, (model, kwargs) in models.items():
            paths[name] = export_saved_model(model, str(base / name), overwrite=name == "vit", **kwargs)
    results, outputs = _serve(root, paths, PROBE_IDS, REJECTIONS, _readme(SIGNATURES))
    return dict(models=models, paths=paths, base=base, results=results, outputs=outputs, root=root)


def _check_outputs(got, expected, signature):
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        if key == "label":
            assert got[key].dtype == np.int64
            np.testing.assert_array_equal(got[key], value)
        elif signature == "generate":  # token for token
            assert got[key].dtype == np.int32, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key].dtype == np.float32, key
            np.testing.assert_allclose(got[key], value, atol=1e-5, rtol=0, err_msg=key)


def _json_inputs(body, definition):
    """A REST body's inputs in the signature's dtypes, as TF Serving converts them."""
    return {
        key: np.asarray(value, definition["inputs"][key][0]) for key, value in body["inputs"].items()
    }


def test_export_does_not_import_tensorflow_until_called():
    assert not _EXPORT_IMPORTED_TENSORFLOW


def test_layout_is_what_tf_serving_watches(served):
    for name, path in served["paths"].items():
        assert path == str(served["base"] / name / "1")
        assert {"saved_model.pb", "variables"} <= set(os.listdir(path))
        # Nothing left beside the version folder (the staging folder is gone).
        assert os.listdir(served["base"] / name) == ["1"]
    assert not os.path.exists(served["base"] / "vit" / "1" / "stale.txt")


def test_serving_process_imported_only_tensorflow(served):
    assert served["results"]["keras_modules"] == []


@pytest.mark.parametrize("model,signature,probe", PROBE_IDS, ids=["-".join(c) for c in PROBE_IDS])
def test_signature_matches_source_model(served, model, signature, probe):
    expected = _source_outputs(served["models"][model][0], signature, PROBES[model, probe])
    _check_outputs(served["outputs"](f"{model}-{signature}-{probe}"), expected, signature)


def test_signature_definitions(served):
    definitions = served["results"]["signature_defs"]
    outputs = {
        "gpt2": {"logits": ["float32", [-1, -1, 1024]]},
        "transformer": {"logits": ["float32", [-1, -1, 1000]]},
        "bert": {"sequence_output": ["float32", [-1, -1, 128]], "pooled_output": ["float32", [-1, 128]]},
        "bert_classifier": {"logits": ["float32", [-1, 3]]},
        "vit": {"logits": ["float32", [-1, 10]]},
    }
    classify = {"probabilities": None, "label": ["int64", [-1]]}
    generated = {"token_ids": INT32_PAIR, "padding_mask": INT32_PAIR}
    for name, (model, _) in served["models"].items():
        assert sorted(definitions[name]) == sorted(SIGNATURES[name]), name
        for signature, definition in definitions[name].items():
            assert definition["method"] == "tensorflow/serving/predict"
            if signature == "generate":
                prompt = "encoder_" if name == "transformer" else ""
                assert definition["inputs"] == {
                    f"{prompt}token_ids": INT32_PAIR,
                    f"{prompt}padding_mask": INT32_PAIR,
                    "max_new_tokens": ["int32", []],
                }
                assert definition["outputs"] == generated
                continue
            if name == "vit":
                assert definition["inputs"] == {"images": ["float32", [-1, -1, -1, 3]]}
            else:
                assert definition["inputs"] == {key: INT32_PAIR for key in model.input}
            expected = outputs[name] if signature == "serving_default" else dict(
                classify, probabilities=outputs[name]["logits"]
            )
            assert definition["outputs"] == expected, (name, signature)


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_bad_requests_are_rejected(served, case):
    error, text = REJECTIONS[case][-2:]
    record = served["results"]["calls"][f"reject-{case}"]
    assert record.get("error") == error, record
    assert text in record["message"], record["message"][:2000]


def test_readme_request_bodies(served):
    requests = readme_requests()
    documented = sorted({(model, _signature(body)) for model, body in requests})
    assert documented == sorted((model, s) for model, names in ALL_SIGNATURES.items() for s in names)
    assert all(set(body) <= {"signature_name", "inputs"} for _, body in requests)
    definitions = served["results"]["signature_defs"]
    for index, model, body in _readme(SIGNATURES):
        signature = _signature(body)
        inputs = _json_inputs(body, definitions[model][signature])
        expected = _source_outputs(served["models"][model][0], signature, inputs)
        _check_outputs(served["outputs"](f"readme-{index}"), expected, signature)


def _model_server_config_class():
    """ModelServerConfig from tensorflow_serving/config/model_server_config.proto (the
    fields used here, same names and numbers), so text_format parses as TF Serving does."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(
        name="model_server_config_subset.proto", package="tensorflow.serving", syntax="proto3"
    )
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    message = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
    repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    config = proto.message_type.add(name="ModelConfig")
    for field, number in (("name", 1), ("base_path", 2), ("model_platform", 4)):
        config.field.add(name=field, number=number, type=string, label=optional)
    proto.message_type.add(name="ModelConfigList").field.add(
        name="config", number=1, type=message, label=repeated, type_name=".tensorflow.serving.ModelConfig"
    )
    proto.message_type.add(name="ModelServerConfig").field.add(
        name="model_config_list", number=1, type=message, label=optional,
        type_name=".tensorflow.serving.ModelConfigList",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig")
    return message_factory.GetMessageClass(descriptor)


def test_models_config_points_at_the_exports(served):
    from google.protobuf import text_format

    with open(MODELS_CONFIG, encoding="utf-8") as f:
        config = text_format.Parse(f.read(), _model_server_config_class()())
    entries = {entry.name: entry for entry in config.model_config_list.config}
    assert sorted(entries) == sorted(SIGNATURES)
    for name, entry in entries.items():
        assert entry.model_platform == "tensorflow"
        # The container mounts saved_models/ at /models.
        assert entry.base_path == f"/models/{name}"
        local = served["base"] / os.path.relpath(entry.base_path, "/models")
        assert (local / "1" / "saved_model.pb").is_file()


def _parse_show_all(text):
    signatures = {}
    for block in re.split(r"\n(?=signature_def\[')", text)[1:]:
        name = re.match(r"signature_def\['(\w+)'\]", block).group(1)
        if name.startswith("__"):
            continue
        inputs_text, outputs_text = block.split("following output(s):")
        tensor = r"(\w+)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([-\d, ]*)\)"
        signatures[name] = {
            "inputs": {n: (d, s) for _, n, d, s in re.findall(tensor, inputs_text)},
            "outputs": {n: (d, s) for _, n, d, s in re.findall(tensor, outputs_text)},
            "method": re.search(r"Method name is: (\S+)", block).group(1),
        }
    return signatures


@pytest.mark.skipif(BACKEND != "tensorflow", reason="reads the file format only; runs in the tensorflow run")
def test_saved_model_cli_show(served):
    result = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", served["paths"]["bert_classifier"], "--all"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    signatures = _parse_show_all(result.stdout)
    assert sorted(signatures) == ["classify", "serving_default"]
    inputs = {key: ("DT_INT32", "-1, -1") for key in ("token_ids", "segment_ids", "padding_mask")}
    assert signatures["serving_default"] == {
        "inputs": inputs, "outputs": {"logits": ("DT_FLOAT", "-1, 3")}, "method": "tensorflow/serving/predict"
    }
    assert signatures["classify"] == {
        "inputs": inputs,
        "outputs": {"label": ("DT_INT64", "-1"), "probabilities": ("DT_FLOAT", "-1, 3")},
        "method": "tensorflow/serving/predict",
    }


@pytest.mark.skipif(BACKEND != "tensorflow", reason="runs the exported graph only; runs in the tensorflow run")
def test_saved_model_cli_run(served, tmp_path):
    inputs = PROBES["gpt2", "batch"]
    for key, value in inputs.items():
        np.save(tmp_path / f"{key}.npy", value)
    result = subprocess.run(
        [
            SAVED_MODEL_CLI, "run", "--dir", served["paths"]["gpt2"], "--tag_set", "serve",
            "--signature_def", "serving_default", "--outdir", str(tmp_path / "out"),
            "--inputs", ";".join(f"{key}={tmp_path / key}.npy" for key in inputs),
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = _source_outputs(served["models"]["gpt2"][0], "serving_default", inputs)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), expected, atol=1e-5, rtol=0)


def test_bad_arguments(served, tmp_path):
    models = {name: model for name, (model, _) in served["models"].items()}
    target = str(tmp_path / "model")

    def raises(match, model, export_dir=target, **kwargs):
        with pytest.raises(ValueError, match=match):
            export_saved_model(model, export_dir, **kwargs)

    raises(r"`model` must be built .* built=False", keras.Sequential([keras.layers.Dense(2)]))
    raises(r"`model` must be a model built by keras_transformers.*not a keras.Model", "gpt2")
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    raises(r"`model` must be a model built by keras_transformers.*not a functional model", plain)
    single = keras.Input((3,))
    raises(r"its inputs are not a dict", keras.Model(single, keras.layers.Dense(2)(single)))
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    other = keras.Model({"token_ids": token_ids}, keras.layers.Embedding(5, 2)(token_ids))
    raises(r"no builder makes a model with inputs \['token_ids'\]", other)
    for version in (0, -1, 1.0, "1", True):
        raises(r"`version` must be a positive int. Received: version=", models["gpt2"], version=version)
    raises("`overwrite` must be a bool", models["gpt2"], overwrite="yes")
    raises("`export_dir` must be a path", models["gpt2"], export_dir=None)
    raises(r"`max_sequence_length` must be given to export a transformer", models["transformer"])
    raises(r"at most the model's 128 learned positions. Received: max_sequence_length=129",
           models["gpt2"], max_sequence_length=129)
    raises(r"`max_sequence_length` does not apply to a ViT", models["vit"], max_sequence_length=8)
    raises(r"The `generate` signature of a transformer model needs generation=\{'start_token_id'",
           models["transformer"], max_sequence_length=64, signatures=["serving_default", "generate"])
    raises(r"must name signatures that a bert model has: \['serving_default'\]. "
           r"Received: signatures=\['generate'\]", models["bert"], signatures=["generate"])
    raises(r"`generation` applies to models with a `generate` signature \(gpt2, transformer\)",
           models["bert"], generation={"sampler": "greedy"})
    raises(r"`generation` must be a dict with keys among", models["gpt2"], generation={"beams": 2})
    raises(r"`generation` cannot use sampler='beam' in an export.*Received: generation=\{'sampler': 'beam'",
           models["gpt2"], generation={"sampler": "beam", "num_beams": 2})
    raises(r"`generation` configures the `generate` signature, which is not exported",
           models["gpt2"], generation={"sampler": "greedy"}, signatures=["serving_default"])
    raises(r"`start_token_id` must be a token id in \[0, 1000\)", models["transformer"],
           max_sequence_length=64, generation={"start_token_id": 1000})
    raises(r"a gpt2 model has", models["gpt2"], signatures=["serving_default", "classify"])
    raises(r"must include 'serving_default'", models["vit"], signatures=["classify"])
    raises(r"`signatures` must be a list", models["vit"], signatures="classify")
    assert not os.path.exists(target)

    # A non-empty version folder is kept unless overwrite=True.
    path = served["paths"]["gpt2"]
    before = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    raises(r"is not empty: pass overwrite=True.*version=1", models["gpt2"],
           export_dir=os.path.dirname(path))
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == before


@pytest.mark.slow
def test_transformer_generate_and_longest_gpt2_output(served, tmp_path):
    """The transformer's `generate` (probe, README request, output too long) and GPT-2's
    `generate` up to exactly max_sequence_length, against Python `generate`."""
    model, kwargs = served["models"]["transformer"]
    transformer = export_saved_model(model, str(tmp_path / "transformer"), generation=GENERATION, **kwargs)
    paths = {"transformer": transformer, "gpt2": served["paths"]["gpt2"]}
    readme = _readme({"transformer": ["generate"]})
    results, outputs = _serve(tmp_path, paths, SLOW_PROBE_IDS, SLOW_REJECTIONS, readme)
    definition = results["signature_defs"]["transformer"]["generate"]
    assert definition["inputs"] == {
        "encoder_token_ids": INT32_PAIR, "encoder_padding_mask": INT32_PAIR, "max_new_tokens": ["int32", []]
    }
    assert definition["outputs"] == {"token_ids": INT32_PAIR, "padding_mask": INT32_PAIR}
    for name, signature, probe in SLOW_PROBE_IDS:
        expected = _source_outputs(served["models"][name][0], signature, PROBES[name, probe])
        _check_outputs(outputs(f"{name}-{signature}-{probe}"), expected, signature)
    assert len(readme) == 1
    index, name, body = readme[0]
    expected = _source_outputs(model, "generate", _json_inputs(body, definition))
    _check_outputs(outputs(f"readme-{index}"), expected, "generate")
    for case, (*_, error, text) in SLOW_REJECTIONS.items():
        record = results["calls"][f"reject-{case}"]
        assert record.get("error") == error and text in record["message"], record


@pytest.mark.slow
def test_sampling_generate_matches_python_generate(served, tmp_path):
    model = served["models"]["gpt2"][0]
    generation = {"sampler": "top_k", "top_k": 5, "temperature": 0.8}
    path = export_saved_model(model, str(tmp_path / "gpt2"), generation=generation)
    probes = {("gpt2", f"seed_{seed}"): dict(PROBES["gpt2", "prompts"], seed=np.int32(seed)) for seed in (3, 4)}
    probe_ids = [("gpt2", "generate", probe) for _, probe in probes]
    _, outputs = _serve(tmp_path, {"gpt2": path}, probe_ids, {}, [], probes=probes)
    prompts = {key: PROBES["gpt2", "prompts"][key] for key in ("token_ids", "padding_mask")}
    for seed in (3, 4):
        expected = generate(model, prompts, 8, seed=seed, **generation)
        got = outputs(f"gpt2-generate-seed_{seed}")
        np.testing.assert_array_equal(got["token_ids"], expected["token_ids"])
    third, fourth = (outputs(f"gpt2-generate-seed_{seed}")["token_ids"] for seed in (3, 4))
    assert not np.array_equal(third, fourth)


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="the check is the same code after the subprocess (slow run: below)"
)
def test_an_export_that_differs_is_not_written(served, tmp_path, monkeypatch):
    _check_failed_export_is_not_written(served, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND == "tensorflow", reason="the tensorflow run checks this in the default run")
def test_an_export_that_differs_is_not_written_through_the_subprocess(
    served, tmp_path, monkeypatch
):
    _check_failed_export_is_not_written(served, tmp_path, monkeypatch)


def _check_failed_export_is_not_written(served, tmp_path, monkeypatch):
    import dataclasses

    original = signatures_module.SIGNATURES["serving_default"]

    def shifted(model, spec, probes):
        outputs = original.reference(model, spec, probes)
        return {key: value + 1e-3 for key, value in outputs.items()}

    monkeypatch.setitem(
        signatures_module.SIGNATURES, "serving_default", dataclasses.replace(original, reference=shifted)
    )
    with pytest.raises(RuntimeError, match="output `logits` differs from the model's by up to 0.001"):
        export_saved_model(served["models"]["gpt2"][0], str(tmp_path / "gpt2"))
    assert os.listdir(tmp_path / "gpt2") == []
