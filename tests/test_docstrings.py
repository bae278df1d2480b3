"""Runs every docstring example in the keras_transformers package, one test per module.

Modules that need TensorFlow (they, or a module in the same subpackage, import it: export/
and tf.data pipelines) run on the TensorFlow backend only.
"""

import ast
import doctest
import importlib
import os

import pytest

import keras_transformers
from tests.testing import BACKEND

PACKAGE_DIR = os.path.dirname(os.path.abspath(keras_transformers.__file__))
TENSORFLOW_MODULES = ("tensorflow", "tensorflow_datasets", "tensorflow_text")
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _imports_tensorflow(path):
    """Whether the module at `path` imports TensorFlow, outside an `if` on Keras' backend
    (`if keras.backend.backend() == "tensorflow":` imports run on that backend only)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "backend()" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] in TENSORFLOW_MODULES for name in names):
            return True
    return False


def package_modules():
    """Every module of keras_transformers as (dotted name, needs TensorFlow).

    A module needs TensorFlow when it, or any module in its subpackage, imports it: a
    subpackage's `__init__` usually imports its modules.
    """
    modules = {}
    for folder, subfolders, files in os.walk(PACKAGE_DIR):
        subfolders[:] = sorted(d for d in subfolders if os.path.isfile(os.path.join(folder, d, "__init__.py")))
        relative = os.path.relpath(folder, os.path.dirname(PACKAGE_DIR))
        package = relative.replace(os.sep, ".")
        for file in sorted(files):
            if file.endswith(".py"):
                name = package if file == "__init__.py" else f"{package}.{file[:-3]}"
                modules[name] = _imports_tensorflow(os.path.join(folder, file))
    tensorflow_packages = {
        name.rsplit(".", 1)[0] if not _is_package(name) else name
        for name, needs in modules.items()
        if needs
    } - {"keras_transformers"}
    return [
        (name, needs or any(name == p or name.startswith(p + ".") for p in tensorflow_packages))
        for name, needs in sorted(modules.items())
    ]


def _is_package(name):
    return os.path.isfile(os.path.join(os.path.dirname(PACKAGE_DIR), *name.split("."), "__init__.py"))


MODULES = package_modules()


def _doctests(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # Only docstrings defined in this module, not the names it imports.
    return [test for test in finder.find(module, module_name) if test.examples]


@pytest.mark.parametrize("module_name,needs_tensorflow", MODULES, ids=[name for name, _ in MODULES])
def test_docstring_examples(module_name, needs_tensorflow):
    if needs_tensorflow and BACKEND != "tensorflow":
        pytest.skip("imports TensorFlow: runs on the tensorflow backend only")
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    for test in _doctests(module_name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed (see stdout)"


def test_docstring_examples_exist():
    total = sum(
        len(test.examples)
        for name, needs_tensorflow in MODULES
        if not needs_tensorflow or BACKEND == "tensorflow"
        for test in _doctests(name)
    )
    assert total > 0, "no docstring examples found: is the walk over keras_transformers broken?"
