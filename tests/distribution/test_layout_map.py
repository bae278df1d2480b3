"""Tests of keras_transformers.distribution: layout coverage, size checks, and training on
virtual devices (JAX: 8 CPU devices; TensorFlow: 4 logical CPUs), in subprocesses because
the device count is fixed when the backend starts.

On every backend: every weight of every builder matches exactly one rule, with the
layout written out independently below; bad meshes raise before any work. On JAX: weights
really are sharded as intended; 3 fit steps under DataParallel and ModelParallel (2x4)
match one device; greedy generation on the sharded model matches; the README's script
runs. On TensorFlow: 3 fit steps under MirroredStrategy match one device.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_transformers import distribution
from keras_transformers.models import bert, gpt2, transformer, vit
from tests.testing import BACKEND

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
M = "model"
TOLERANCE = 1e-5


def expected_axes(path):
    """The intended layout of a weight, from its layer and weight names (no regexes)."""
    layer, weight = path.split("/")[-2:]
    if layer in ("query", "key", "value"):  # (D, N, H), (N, H): split the heads
        return (None, M, None) if weight == "kernel" else (M, None)
    if layer == "attention_output":  # (N, H, D): row-parallel
        return (M, None, None) if weight == "kernel" else (None,)
    if layer in ("intermediate_dense", "pooled_dense", "mlm_dense"):  # column-parallel
        return (None, M) if weight == "kernel" else (M,)
    if layer in ("output_dense", "classifier", "classifier_dense", "nsp_dense", "output_projection"):
        return (M, None) if weight == "kernel" else (None,)  # row-parallel
    if layer.endswith("layer_norm") or layer == "mlm_output_bias":
        return (None,)
    if weight == "embeddings":  # (V or T, D): the hidden axis
        return (None, M)
    if layer == "patch_embedding":
        return {"class_token": (None, None, M), "position_embedding": (None, M)}[weight]
    if layer == "patch_projection":  # (p, p, C, D)
        return (None, None, None, M) if weight == "kernel" else (M,)
    raise KeyError(f"no intended layout for {path}")


def fake_mesh(shape=(2, 4)):
    """A DeviceMesh of named devices: layout maps need no real devices (any backend)."""
    count = int(np.prod(shape))
    return keras.distribution.DeviceMesh(
        shape, ("batch", "model"), devices=[f"cpu:{i}" for i in range(count)]
    )


SIZES = dict(num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)


def every_model():
    """{name: (model kind, model)} for every builder, head and variant."""
    backbone = bert.bert(vocabulary_size=16, max_sequence_length=8, **SIZES)
    kwargs = dict(SIZES, encoder_vocabulary_size=16, decoder_vocabulary_size=16)
    vit_kwargs = dict(SIZES, image_size=8, patch_size=4)
    return {
        "gpt2": ("gpt2", gpt2.gpt2(vocabulary_size=16, max_sequence_length=8, **SIZES)),
        "bert": ("bert", backbone),
        "bert_masked_lm": ("bert", bert.bert_masked_lm(backbone)),
        "bert_pretraining": ("bert", bert.bert_pretraining(backbone)),
        "bert_classifier": ("bert", bert.bert_classifier(backbone, num_classes=3)),
        "transformer": ("transformer", transformer.transformer(**kwargs)),
        "transformer_shared": ("transformer", transformer.transformer(**kwargs, share_embeddings=True)),
        "transformer_untied": (
            "transformer",
            transformer.transformer(**kwargs, tie_output_projection=False),
        ),
        "vit": ("vit", vit.vit(num_classes=3, **vit_kwargs)),
        "vit_no_head": ("vit", vit.vit(num_classes=None, **vit_kwargs)),
    }


@pytest.fixture(scope="module")
def models():
    return every_model()


# Layout coverage: no devices needed, every backend.


@pytest.mark.parametrize("per_kind", [False, True], ids=["one_map", "per_kind_maps"])
def test_every_weight_has_exactly_one_intended_rule(models, per_kind):
    problems = []
    for name, (kind, model) in models.items():
        layout_map = distribution.get_layout_map(fake_mesh(), kind if per_kind else None)
        for weight in model.weights:
            matches = [key for key in layout_map if re.fullmatch(key, weight.path)]
            if len(matches) != 1:
                problems.append(f"{name}: {weight.path} matches {len(matches)} rules {matches}")
                continue
            axes = layout_map[weight.path].axes
            if axes != expected_axes(weight.path) or len(axes) != len(weight.shape):
                problems.append(f"{name}: {weight.path} {tuple(weight.shape)} gets {axes}")
    assert not problems, "\n".join(problems)


def test_sharded_sizes_are_the_checked_ones(models):
    # The model axis only ever splits num_heads (N), hidden_dim (D) or intermediate_dim
    # (F): the sizes check_mesh checks. SIZES gives them distinct values 2, 8, 16.
    checked = {SIZES["num_heads"], SIZES["hidden_dim"], SIZES["intermediate_dim"]}
    for _, model in models.values():
        for weight in model.weights:
            for size, axis in zip(weight.shape, expected_axes(weight.path)):
                if axis == M:
                    assert size in checked, (weight.path, tuple(weight.shape))


def test_a_layer_without_a_rule_is_listed():
    model = gpt2.gpt2(vocabulary_size=16, max_sequence_length=8, **SIZES)
    extra = keras.layers.Dense(3, name="new_head")
    extended = keras.Model(model.input, extra(model.output))
    layout_map = distribution.get_layout_map(fake_mesh(), "gpt2")
    assert distribution.unmatched_paths(model, layout_map) == []
    assert distribution.unmatched_paths(extended, layout_map) == ["new_head/bias", "new_head/kernel"]


def test_per_kind_maps_are_smaller_and_checked():
    everything = distribution.layout_rules()
    for kind in distribution.MODEL_KINDS:
        assert set(distribution.layout_rules(kind)) < set(everything)
    with pytest.raises(ValueError, match="`model_kind` must be None or one of"):
        distribution.get_layout_map(fake_mesh(), "llama")


def test_mesh_without_model_axis_raises():
    mesh = keras.distribution.DeviceMesh((2,), ("batch",), devices=["cpu:0", "cpu:1"])
    with pytest.raises(ValueError, match=r"axis named 'model'.*axis_names=\('batch',\)"):
        distribution.get_layout_map(mesh)
    with pytest.raises(ValueError, match="must be a keras.distribution.DeviceMesh"):
        distribution.get_layout_map((2, 4))


# Size checks: before any work, every backend.


@pytest.mark.parametrize(
    "config,mesh_shape,named",
    [
        ("gpt2_small", (1, 8), ["model axis 8", "num_heads=12"]),
        ("bert_base", (2, 5), ["model axis 5", "num_heads=12", "hidden_dim=768", "intermediate_dim=3072"]),
        (dict(num_heads=4, hidden_dim=16, intermediate_dim=30), (2, 4), ["model axis 4", "intermediate_dim=30"]),
        (dict(num_heads=8, hidden_dim=20, intermediate_dim=32), (1, 8), ["model axis 8", "hidden_dim=20"]),
    ],
)
def test_model_axis_must_divide_the_sizes(config, mesh_shape, named):
    for check in (distribution.check_mesh, distribution.model_parallel):
        with pytest.raises(ValueError) as error:
            check(config, mesh_shape)
        for text in named + [f"mesh_shape={mesh_shape}"]:
            assert text in str(error.value)


def test_sizes_are_read_from_a_built_model():
    model = gpt2.gpt2(vocabulary_size=16, max_sequence_length=8, **SIZES)  # 2 heads
    assert distribution.check_mesh(model, (4, 2)) is None
    with pytest.raises(ValueError, match=r"model axis 4\) and num_heads=2$"):
        distribution.check_mesh(model, (2, 4))


def test_good_meshes_pass():
    assert distribution.check_mesh("gpt2_small", (2, 4)) == "gpt2"
    assert distribution.check_mesh("vit_base_16", (1, 2)) == "vit"
    assert distribution.check_mesh(dict(num_heads=4, hidden_dim=16, intermediate_dim=32), (8, 4)) is None


@pytest.mark.parametrize(
    "config,mesh_shape,match",
    [
        ("gpt2_enormous", (2, 4), "`name` must be one of"),
        (dict(num_heads=4, hidden_dim=16), (2, 4), "`config` must be a preset name"),
        (7, (2, 4), "`config` must be a preset name"),
        ("gpt2_tiny", (8,), r"`mesh_shape` must be two positive ints.*mesh_shape=\(8,\)"),
        ("gpt2_tiny", (2, 0), "`mesh_shape` must be two positive ints"),
        ("gpt2_tiny", "2x4", "`mesh_shape` must be two positive ints"),
    ],
)
def test_bad_arguments_raise(config, mesh_shape, match):
    with pytest.raises(ValueError, match=match):
        distribution.model_parallel(config, mesh_shape)


@pytest.mark.skipif(BACKEND == "jax", reason="the other backends' error")
def test_model_parallel_needs_jax():
    with pytest.raises(ValueError, match=f"needs the JAX backend.*backend='{BACKEND}'"):
        distribution.model_parallel("gpt2_tiny", (1, 1))


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution lays out variables on JAX only")
def test_mesh_must_use_every_device():
    count = len(keras.distribution.list_devices())
    with pytest.raises(ValueError, match=f"every device: {count} devices.*mesh_shape=\\(2, 2\\)"):
        distribution.model_parallel("gpt2_tiny", (2, 2), devices=["cpu:0"] * count)


# Training and generation on virtual devices, in subprocesses.


def run_script(args, env=None, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, **(env or {}))
    result = subprocess.run(
        [sys.executable] + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout + result.stderr[-5000:]
    return result.stdout


JAX_ENV = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution lays out variables on JAX only")
tensorflow_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute: TensorFlow backend")


def run_jax_script(tmp_path, kinds):
    path = tmp_path / "results.json"
    run_script(["-m", "tests.distribution.jax_script", str(path)] + kinds, env=JAX_ENV)
    with open(path) as f:
        results = json.load(f)
    assert results["device_count"] == 8
    assert not results["tensorflow_imported"]
    return results


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    return run_jax_script(tmp_path_factory.mktemp("jax"), ["layouts", "gpt2"])


def check_model_parallel_sharding(shardings):
    for path, sharding in shardings.items():
        axes = expected_axes(path)
        assert sharding["type"] == "NamedSharding", path
        assert sharding["mesh"] == {"batch": 2, "model": 4}, path
        assert sharding["num_devices"] == 8, path
        spec = sharding["spec"] + [None] * (len(axes) - len(sharding["spec"]))
        assert tuple(spec) == axes, (path, spec)
        # Really split: each device holds a quarter along the model axis.
        local = [size // 4 if axis == M else size for size, axis in zip(sharding["shape"], axes)]
        assert sharding["shard_shape"] == local, (path, sharding)


def check_training(result):
    losses = result["losses"]
    assert len(losses["single"]) == 3
    for run in ("data_parallel", "model_parallel"):
        np.testing.assert_allclose(losses[run], losses["single"], rtol=TOLERANCE, err_msg=run)
        assert result["weight_difference"][run] < TOLERANCE, run
    assert losses["single"][2] < losses["single"][0]  # it did train
    check_model_parallel_sharding(result["model_parallel_sharding"])
    for path, sharding in result["data_parallel_sharding"].items():
        assert sharding["num_devices"] == 8 and sharding["shard_shape"] == sharding["shape"], path
    for path, spec in result["momentum_sharding"]:  # optimizer state follows its weight
        assert tuple(spec + [None] * (len(expected_axes(path)) - len(spec))) == expected_axes(path), path


def check_generation(result):
    generation = result["generation"]
    if isinstance(generation["single"], str):
        pytest.skip(f"keras_transformers.generation is not available: {generation['single']}")
    assert generation["model_parallel"] == generation["single"]


@jax_only
def test_jax_weights_of_every_builder_are_sharded(jax_results):
    layouts = jax_results["layouts"]
    assert set(layouts) == {"bert_pretraining", "bert_classifier", "transformer_untied", "vit"}
    for shardings in layouts.values():
        check_model_parallel_sharding(shardings)


@jax_only
def test_jax_gpt2_data_and_model_parallel_fit_match_one_device(jax_results):
    check_training(jax_results["gpt2"])


@jax_only
def test_jax_gpt2_greedy_generation_on_the_sharded_model(jax_results):
    check_generation(jax_results["gpt2"])


@jax_only
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transformer", "bert", "vit"])
def test_jax_fit_matches_one_device(tmp_path, kind):
    result = run_jax_script(tmp_path, [kind])[kind]
    check_training(result)
    if kind == "transformer":
        check_generation(result)


@jax_only
def test_readme_script_trains_on_a_mesh():
    output = run_script(
        ["tests/distribution/train_gpt2.py", "--model-parallel", "2", "--steps", "2"], env=JAX_ENV
    )
    assert re.search(r"process 0: 8 devices, loss \d+\.\d+", output), output


@jax_only
@pytest.mark.slow
def test_readme_script_on_two_processes(tmp_path):
    # Two "hosts" of 4 CPU devices each on localhost, one coordinator.
    port = 20000 + os.getpid() % 20000
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    processes = [
        subprocess.Popen(
            [sys.executable, "tests/distribution/train_gpt2.py", "--model-parallel", "2", "--steps", "2",
             "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stdout + stderr[-5000:]
    losses = [re.search(r"process \d: 8 devices, loss (\S+)", stdout).group(1) for stdout, _ in outputs]
    assert losses[0] == losses[1]


def run_tf_script(tmp_path, kinds):
    path = tmp_path / "results.json"
    run_script(["-m", "tests.distribution.tf_script", str(path)] + kinds,
               env={"KERAS_BACKEND": "tensorflow"})
    with open(path) as f:
        return json.load(f)


def check_mirrored(result):
    assert result["num_replicas"] == 4
    assert result["variable_type"] == "MirroredVariable"
    np.testing.assert_allclose(result["losses"]["mirrored"], result["losses"]["single"], rtol=TOLERANCE)
    assert result["weight_difference"] < TOLERANCE


@tensorflow_only
def test_tensorflow_mirrored_strategy_fit_matches_one_device(tmp_path):
    results = run_tf_script(tmp_path, ["gpt2"])
    assert len(results["devices"]) == 4
    check_mirrored(results["gpt2"])


@tensorflow_only
def test_readme_mirrored_strategy_snippet(tmp_path):
    # Its own process: two MirroredStrategy objects in one process can mix up their
    # collective ops (TensorFlow 2.21).
    readme = run_tf_script(tmp_path, ["readme"])["readme"]
    assert re.fullmatch(r"4 replicas, loss \d+\.\d+\n", readme), readme


@tensorflow_only
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transformer", "bert", "vit"])
def test_tensorflow_mirrored_strategy_every_builder(tmp_path, kind):
    check_mirrored(run_tf_script(tmp_path, [kind])[kind])
