"""The TFDS builders over ../shared/data: built from the real files into a temporary data_dir,
their records must equal this package's readers' (all of them, in order), hold the published
counts and class distributions, and carry the same features as TFDS's own data sets."""

import os
import shutil

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from keras_transformers.data import bert, mnist, tfds_builders, translation  # noqa: E402
from tests.testing import SHARED_DATA  # noqa: E402

FOLDERS = {
    "local_multi30k": "multi30k",
    "local_sst2": "sst2",
    "local_ag_news_subset": "agnews",
    "local_mnist": "mnist-test",
}
pytestmark = pytest.mark.skipif(
    not all(os.path.isdir(os.path.join(SHARED_DATA, folder)) for folder in FOLDERS.values()),
    reason="needs ../shared/data/{multi30k,sst2,agnews,mnist-test}",
)


def _manual_dir(name):
    return os.path.join(SHARED_DATA, FOLDERS[name])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """All four data sets prepared once (about 5 s on one core)."""
    folder = str(tmp_path_factory.mktemp("tfds"))
    for name in FOLDERS:
        tfds_builders.load(name, "test" if name != "local_multi30k" else "train", _manual_dir(name), folder)
    return folder


def _split(name, split, data_dir):
    return tfds.as_numpy(tfds_builders.load(name, split, data_dir=data_dir, batch_size=-1))


def test_the_builders_are_registered_under_names_tfds_does_not_use():
    names = tfds.list_builders()
    for name, cls in tfds_builders.BUILDERS.items():
        assert names.count(name) == 1 and tfds.builder_cls(name) is cls
    assert sorted(tfds_builders.BUILDERS) == sorted(FOLDERS)


@pytest.mark.parametrize(
    "name,standard",
    [("local_sst2", "glue/sst2"), ("local_ag_news_subset", "ag_news_subset"), ("local_mnist", "mnist")],
)
def test_features_and_supervised_keys_equal_the_standard_data_sets(name, standard, tmp_path):
    # Building DatasetInfo from TFDS's own code needs no download.
    ours = tfds.builder(name, data_dir=str(tmp_path)).info
    theirs = tfds.builder(standard, data_dir=str(tmp_path)).info
    assert ours.features.get_serialized_info() == theirs.features.get_serialized_info()
    assert repr(ours.features) == repr(theirs.features)
    assert ours.supervised_keys == theirs.supervised_keys
    assert ours.version == "1.0.0" and ours.citation and ours.description and ours.homepage


def test_multi30k_equals_the_reader(data_dir):
    sizes = {"train": 29000, "validation": 1014, "test_2016_flickr": 1000}
    info = tfds.builder("local_multi30k", data_dir=data_dir).info
    assert {split: info.splits[split].num_examples for split in sizes} == sizes
    assert info.supervised_keys == ("de", "en")
    for split, file_split in (("train", "train"), ("validation", "val"), ("test_2016_flickr", "test_2016_flickr")):
        german, english = tfds_builders.multi30k_texts(split, data_dir=data_dir)
        assert (german, english) == translation.load_multi30k(_manual_dir("local_multi30k"), file_split)
        assert len(german) == sizes[split]
    assert english[-1] == "A girl at the shore of a beach with a mountain in the distance."


def test_sst2_equals_the_reader(data_dir):
    distributions = {"train": [29780, 37569], "validation": [428, 444], "test": [912, 909]}
    for split, file in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        records = _split("local_sst2", split, data_dir)
        sentences, labels = bert.read_sst2(os.path.join(_manual_dir("local_sst2"), file))
        assert [s.decode("utf-8") for s in records["sentence"]] == sentences
        np.testing.assert_array_equal(records["label"], labels)
        np.testing.assert_array_equal(records["idx"], np.arange(len(labels)))
        assert np.bincount(records["label"]).tolist() == distributions[split]
        helper_sentences, helper_labels = tfds_builders.sst2_sentences(split, data_dir=data_dir)
        assert helper_sentences == sentences and helper_labels.dtype == "int32"
    assert sentences[-1] == "but here 's the real damn : it is n't funny , either ."


def test_ag_news_equals_the_reader(data_dir):
    names = tfds.builder("local_ag_news_subset", data_dir=data_dir).info.features["label"].names
    for split, file, size in (("train", "dev.tsv", 10001), ("test", "test.tsv", 7600)):
        records = _split("local_ag_news_subset", split, data_dir)
        rows = bert.read_agnews_rows(os.path.join(_manual_dir("local_ag_news_subset"), file))
        assert len(rows) == len(records["label"]) == size
        assert [d.decode("utf-8") for d in records["description"]] == [text for text, _ in rows]
        assert [names[i] for i in records["label"]] == [label for _, label in rows]
        assert set(records["title"].tolist()) == {b""}
        documents = tfds_builders.agnews_documents(split, data_dir=data_dir)
        assert documents == bert.read_agnews(os.path.join(_manual_dir("local_ag_news_subset"), file))
    assert names == ["World", "Sports", "Business", "Sci/Tech"]
    assert np.bincount(records["label"]).tolist() == [1900] * 4  # the official test set
    assert rows[0][0].startswith("Unions representing workers at Turner")


def test_mnist_equals_the_reader(data_dir):
    images, labels = tfds_builders.mnist_arrays(data_dir=data_dir)
    expected_images, expected_labels = mnist.load_mnist_test(SHARED_DATA)
    assert images.dtype == labels.dtype == np.uint8 and images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    # The MNIST test set's published digit counts.
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # The same split, whichever way the arrays came.
    _, _, from_files = mnist.mnist_datasets(SHARED_DATA, max_examples=500)
    _, _, from_tfds = mnist.mnist_datasets(arrays=(images, labels), max_examples=500)
    np.testing.assert_array_equal(from_files["validation_indices"], from_tfds["validation_indices"])
    assert from_files["train_counts"] == from_tfds["train_counts"]


def test_a_missing_manual_dir_is_named(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        tfds_builders.load("local_sst2", "train", manual_dir=missing, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="manual_dir=None"):
        tfds_builders.load("local_mnist", "test", data_dir=str(tmp_path / "tfds"))
    assert not os.path.exists(tmp_path / "tfds" / "local_sst2" / "1.0.0")


def test_a_manual_dir_without_a_file_names_it(tmp_path):
    partial = tmp_path / "sst2_partial"
    partial.mkdir()
    shutil.copy(os.path.join(_manual_dir("local_sst2"), "dev.tsv"), partial)
    with pytest.raises(FileNotFoundError, match=r"train\.tsv, test\.tsv .*sst2_partial"):
        tfds_builders.load("local_sst2", "validation", manual_dir=str(partial), data_dir=str(tmp_path / "a"))
    # Through TFDS's own API the builder checks the folder too.
    builder = tfds.builder("local_sst2", data_dir=str(tmp_path / "b"))
    with pytest.raises(FileNotFoundError, match=r"train\.tsv, test\.tsv .*sst2_partial"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(partial)))


def test_a_bad_name_raises():
    with pytest.raises(TypeError, match="name=3"):
        tfds_builders.load(3, "train")


def test_preparing_leaves_pythons_random_state_alone(tmp_path):
    """TFDS draws its temporary folder's name from Python's `random`, whose state seeds Keras'
    unseeded initializers: a seeded example must build the same model whether it prepares the
    copy or reads it."""
    import random

    folder = tmp_path / "sst2"
    folder.mkdir()
    for file in tfds_builders.LocalSst2.MANUAL_FILES:
        (folder / file).write_text("label\tsentence\n1\ta gem\n0\tdull\n", encoding="utf-8")
    random.seed(0)
    state = random.getstate()
    dataset = tfds_builders.load("local_sst2", "validation", str(folder), str(tmp_path / "tfds"))
    assert os.path.isdir(tmp_path / "tfds" / "local_sst2" / "1.0.0")
    assert [int(x["label"]) for x in dataset] == [1, 0]
    assert random.getstate() == state
