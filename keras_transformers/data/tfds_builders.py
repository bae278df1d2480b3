"""TFDS builders over local copies of Multi30k, SST-2, AG News and the MNIST test set.

Each builder reads the files of one folder of ../shared/data (its TFDS "manual folder",
`tfds.download.DownloadConfig(manual_dir=...)`) with this package's own readers and writes
a TFDS data set whose features and splits mirror the standard TFDS one, where there is one:

| builder | manual folder | splits | features | mirrors |
|---|---|---|---|---|
| `local_multi30k` | multi30k/ | train, validation, test_2016_flickr | de, en | (none in TFDS) |
| `local_sst2` | sst2/ | train, validation, test | sentence, label, idx | `glue/sst2` |
| `local_ag_news_subset` | agnews/ | train (a 10,001-article sample), test | description, title, label | `ag_news_subset` |
| `local_mnist` | mnist-test/ | test | image, label | `mnist` |

Differences from the standard data sets: SST-2's test split is labelled here (GLUE's has
label -1); AG News' "title" is empty (the files hold the description alone) and its
"train" is a 10,001-article sample of the 120,000; MNIST has its test split only.
Examples keep the files' order.

Users with internet get the standard data sets with TFDS itself, e.g.
`tfds.load("glue/sst2", split="validation")`, `tfds.load("ag_news_subset", split="test")`,
`tfds.load("mnist", split="test")`, or through this module's functions with
`name="glue/sst2"` (`"ag_news_subset"`, `"mnist"`): the features are the same, so the same
code reads either. Multi30k has no TFDS data set: its files are in the multi30k/dataset
repository (`translation.MULTI30K_URL`).

Importing this module registers the four builders with TFDS, after which
`tfds.builder("local_sst2")` works like any TFDS name.
"""

import os
import random

import numpy as np
import tensorflow_datasets as tfds

from keras_transformers.data import bert, mnist, translation

_RELEASE_NOTES = {"1.0.0": "First release: the files of ../shared/data, in their order."}


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A data set read from local files: the split name -> source map, the features, the info.

    Subclasses set `SPLITS` ({split name: the source `_generate_examples` reads}),
    `MANUAL_FILES`, the info strings and `_features`, and yield (index, example) in the
    files' order (the data set disables TFDS's shuffling, so the order is kept).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = _RELEASE_NOTES
    SPLITS = {}
    MANUAL_FILES = ()
    DESCRIPTION = HOMEPAGE = CITATION = ""
    SUPERVISED_KEYS = None

    def _features(self):
        raise NotImplementedError

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=self._features(),
            supervised_keys=self.SUPERVISED_KEYS,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        folder = os.fspath(dl_manager.manual_dir)
        check_manual_dir(self.name, folder)
        return {split: self._generate_examples(folder, source) for split, source in self.SPLITS.items()}


class LocalMulti30k(_LocalBuilder):
    """Multi30k task 1, German-English caption pairs, from multi30k/{split}.{de,en}.gz."""

    name = "local_multi30k"
    SPLITS = {"train": "train", "validation": "val", "test_2016_flickr": "test_2016_flickr"}
    MANUAL_FILES = tuple(f"{split}.{language}.gz" for split in SPLITS.values() for language in ("de", "en"))
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {', '.join(MANUAL_FILES)} (github.com/multi30k/dataset, data/task1/raw) in the manual folder."
    )
    DESCRIPTION = (
        "Multi30k task 1: image captions in German with their English translations; "
        "29,000 training, 1,014 validation and 1,000 test (test_2016_flickr) pairs."
    )
    HOMEPAGE = "https://github.com/multi30k/dataset"
    CITATION = """@inproceedings{elliott-etal-2016-multi30k,
  title = {Multi30K: Multilingual English-German Image Descriptions},
  author = {Elliott, Desmond and Frank, Stella and Sima'an, Khalil and Specia, Lucia},
  booktitle = {Proceedings of the 5th Workshop on Vision and Language},
  pages = {70--74},
  year = {2016}
}"""
    SUPERVISED_KEYS = ("de", "en")

    def _features(self):
        return tfds.features.Translation(languages=("de", "en"))

    def _generate_examples(self, folder, split):
        german, english = translation.load_multi30k(folder, split, "de", "en")
        for index, pair in enumerate(zip(german, english)):
            yield index, dict(zip(("de", "en"), pair))


class LocalSst2(_LocalBuilder):
    """SST-2 (GLUE's binary Stanford Sentiment Treebank) from sst2/{train,dev,test}.tsv."""

    name = "local_sst2"
    SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    MANUAL_FILES = tuple(SPLITS.values())
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train.tsv, dev.tsv and test.tsv (github.com/awake020/pytorch_Bert_sst2, SST-2/; "
        "label<TAB>sentence with a header) in the manual folder."
    )
    DESCRIPTION = (
        "SST-2: movie-review sentences labelled negative (0) or positive (1), as GLUE's sst2 "
        "(same features); 67,349 training, 872 validation and 1,821 test sentences, the test "
        "split labelled."
    )
    HOMEPAGE = "https://nlp.stanford.edu/sentiment/"
    CITATION = """@inproceedings{socher-etal-2013-recursive,
  title = {Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank},
  author = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang, Jason and
            Manning, Christopher D. and Ng, Andrew and Potts, Christopher},
  booktitle = {Proceedings of the 2013 Conference on Empirical Methods in Natural Language Processing},
  pages = {1631--1642},
  year = {2013}
}
@inproceedings{wang2019glue,
  title = {{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author = {Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer
            and Bowman, Samuel R.},
  booktitle = {International Conference on Learning Representations},
  year = {2019}
}"""

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "sentence": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                "idx": np.int32,
            }
        )

    def _generate_examples(self, folder, file):
        sentences, labels = bert.read_sst2(os.path.join(folder, file))
        for index, (sentence, label) in enumerate(zip(sentences, labels)):
            yield index, {"sentence": sentence, "label": int(label), "idx": index}


class LocalAgNewsSubset(_LocalBuilder):
    """AG News from agnews/{dev,test}.tsv, with `ag_news_subset`'s features."""

    name = "local_ag_news_subset"
    SPLITS = {"train": "dev.tsv", "test": "test.tsv"}
    MANUAL_FILES = tuple(SPLITS.values())
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put dev.tsv and test.tsv (github.com/forest-snow/alps, data/agnews; text<TAB>label, "
        "no header) in the manual folder."
    )
    DESCRIPTION = (
        "AG News: news-article descriptions in 4 classes (World, Sports, Business, Sci/Tech), "
        "with ag_news_subset's features; test is the official 7,600-article test set, train a "
        "10,001-article sample of the 120,000 training articles. Titles are absent (empty)."
    )
    HOMEPAGE = "https://arxiv.org/abs/1509.01626"
    CITATION = """@inproceedings{zhang2015character,
  title = {Character-level Convolutional Networks for Text Classification},
  author = {Zhang, Xiang and Zhao, Junbo and LeCun, Yann},
  booktitle = {Advances in Neural Information Processing Systems 28},
  pages = {649--657},
  year = {2015}
}"""
    SUPERVISED_KEYS = ("description", "label")

    def _features(self):
        return tfds.features.FeaturesDict(
            {
                "label": tfds.features.ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"]),
                "title": tfds.features.Text(),
                "description": tfds.features.Text(),
            }
        )

    def _generate_examples(self, folder, file):
        for index, (text, label) in enumerate(bert.read_agnews_rows(os.path.join(folder, file))):
            yield index, {"label": label, "title": "", "description": text}


class LocalMnist(_LocalBuilder):
    """The MNIST test set (10,000 digits) from mnist-test/'s idx files, with `mnist`'s features."""

    name = "local_mnist"
    SPLITS = {"test": tuple(os.path.basename(path) for path in mnist.MNIST_TEST_FILES)}
    MANUAL_FILES = SPLITS["test"]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put {' and '.join(MANUAL_FILES)} (MNIST's test set, idx format, gzipped) in the manual folder."
    )
    DESCRIPTION = "The 10,000 MNIST test digits (28 x 28 grey images, labels 0-9), with mnist's features."
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    CITATION = """@article{lecun2010mnist,
  title = {MNIST handwritten digit database},
  author = {LeCun, Yann and Cortes, Corinna and Burges, CJ},
  journal = {ATT Labs [Online]. Available: http://yann.lecun.com/exdb/mnist},
  volume = {2},
  year = {2010}
}"""
    SUPERVISED_KEYS = ("image", "label")

    def _features(self):
        return tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
        )

    def _generate_examples(self, folder, files):
        images, labels = (mnist.read_idx(os.path.join(folder, file)) for file in files)
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": image[..., None], "label": int(label)}


BUILDERS = {cls.name: cls for cls in (LocalMulti30k, LocalSst2, LocalAgNewsSubset, LocalMnist)}


def check_manual_dir(name, manual_dir):
    """Raises FileNotFoundError, naming the folder and the files, unless `manual_dir` holds
    every file the local builder `name` reads."""
    files = BUILDERS[name].MANUAL_FILES
    if manual_dir is None or not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            f"`manual_dir` must be a folder holding {', '.join(files)} to prepare {name}. "
            f"Received: manual_dir={manual_dir!r}"
        )
    missing = [file for file in files if not os.path.isfile(os.path.join(manual_dir, file))]
    if missing:
        raise FileNotFoundError(
            f"`manual_dir` must hold {', '.join(missing)} to prepare {name}. "
            f"Received: manual_dir={manual_dir!r}"
        )


def load(name, split, manual_dir=None, data_dir=None, **as_dataset_options):
    """One split of a TFDS data set as a `tf.data.Dataset`, prepared first if need be.

    A local builder (`BUILDERS`: "local_multi30k", "local_sst2", "local_ag_news_subset",
    "local_mnist") is prepared once from `manual_dir` into `data_dir`; later calls read
    the prepared copy (`manual_dir` is then not needed). Any other TFDS name (such as
    "glue/sst2") is downloaded and prepared by TFDS, which needs internet the first time.

    Args:
        name: a TFDS name ("local_sst2", "glue/sst2", ...).
        split: a split name, or a TFDS split expression ("train[:10%]").
        manual_dir: the folder holding the local builder's files (e.g. ../shared/data/sst2).
        data_dir: where TFDS keeps prepared data (None: TFDS's default,
            ~/tensorflow_datasets or $TFDS_DATA_DIR).
        **as_dataset_options: passed to `builder.as_dataset` (`batch_size`,
            `as_supervised`, `shuffle_files`, ...).

    Returns:
        A `tf.data.Dataset` of the split's examples, in the files' order for a local builder.

    Raises:
        FileNotFoundError: a local builder is not prepared and `manual_dir` lacks its files.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> for file in ("train.tsv", "dev.tsv", "test.tsv"):
    ...     with open(os.path.join(folder, file), "w") as f:
    ...         _ = f.write("label\\tsentence\\n1\\ta gem\\n0\\tdull\\n")
    >>> dataset = load("local_sst2", "validation", manual_dir=folder, data_dir=tempfile.mkdtemp())
    Downloading and preparing dataset ...
    Dataset local_sst2 downloaded and prepared to ...
    >>> [(x["sentence"].numpy(), int(x["label"]), int(x["idx"])) for x in dataset]
    [(b'a gem', 1, 0), (b'dull', 0, 1)]
    """
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a TFDS data set name (str). Received: name={name!r}")
    builder = tfds.builder(name, data_dir=data_dir)
    if name in BUILDERS and not builder.is_prepared():
        check_manual_dir(name, manual_dir)
    # TFDS names its temporary folder with Python's global `random`, from which Keras draws the
    # seeds of unseeded initializers: restore its state, or a seeded run would train otherwise
    # the first time (preparing) than later (reading the prepared copy) or from the files.
    state = random.getstate()
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    finally:
        random.setstate(state)
    return builder.as_dataset(split=split, **as_dataset_options)


def _whole_split(name, split, manual_dir, data_dir):
    # One batch holding the whole split, as numpy: far faster than example by example.
    return tfds.as_numpy(load(name, split, manual_dir, data_dir, batch_size=-1))


def _texts(strings):
    return [s.decode("utf-8") for s in strings.tolist()]


def multi30k_texts(split, manual_dir=None, data_dir=None):
    """(German captions, English captions) of a split, as `translation.load_multi30k` returns.

    Args:
        split: "train", "validation" or "test_2016_flickr".
        manual_dir, data_dir: as `load`'s.
    """
    records = _whole_split("local_multi30k", split, manual_dir, data_dir)
    return _texts(records["de"]), _texts(records["en"])


def sst2_sentences(split, manual_dir=None, data_dir=None, name="local_sst2"):
    """(sentences, int32 labels) of an SST-2 split, as `bert.read_sst2` returns.

    Args:
        split: "train", "validation" or "test".
        manual_dir, data_dir: as `load`'s.
        name: "local_sst2", or "glue/sst2" for TFDS's own (whose test labels are -1).
    """
    records = _whole_split(name, split, manual_dir, data_dir)
    return _texts(records["sentence"]), records["label"].astype("int32")


def agnews_documents(split, manual_dir=None, data_dir=None, name="local_ag_news_subset"):
    """The descriptions of an AG News split as documents of sentences, as `bert.read_agnews`.

    Args:
        split: "train" or "test".
        manual_dir, data_dir: as `load`'s.
        name: "local_ag_news_subset", or "ag_news_subset" for TFDS's own (120,000
            training articles).
    """
    records = _whole_split(name, split, manual_dir, data_dir)
    return bert.to_documents(_texts(records["description"]))


def mnist_arrays(split="test", manual_dir=None, data_dir=None, name="local_mnist"):
    """uint8 images (N, 28, 28) and uint8 labels (N,), as `mnist.load_mnist_test` returns.

    Args:
        split: "test" ("train" too with name="mnist").
        manual_dir, data_dir: as `load`'s.
        name: "local_mnist", or "mnist" for TFDS's own.
    """
    records = _whole_split(name, split, manual_dir, data_dir)
    return records["image"][..., 0], records["label"].astype("uint8")
