"""Pretrain a small BERT with masked-LM and next-sentence prediction on AG News.

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (2019), section 3.1 and appendix A:

- the corpus: AG News (Zhang et al. 2015) articles from ../shared/data/agnews, split into
  sentences. News articles are documents whose consecutive sentences follow each other,
  which next-sentence prediction needs (SST-2's isolated sentences, or Multi30k's
  captions of unrelated images, have no "next sentence"). dev.tsv (10,001 articles) and
  test.tsv without its first 1,000 articles train; those 1,000 are held out;
- an uncased WordPiece vocabulary learned on the training articles with keras-hub
  (cached in --output/vocab.txt), or any BERT vocab.txt with --vocabulary;
- next-sentence pairs: [CLS] A [SEP] B [SEP], B the text that follows A in the article
  (label 0, IsNext) or, half of the time, the second part of another article (label 1,
  NotNext); `--duplicates` passes over the corpus with new cuts and masks (BERT's
  dupe_factor);
- masked LM: 15% of the tokens chosen, of those 80% [MASK], 10% a random token, 10%
  unchanged; the loss is the cross-entropy at the chosen positions only, plus the
  next-sentence cross-entropy;
- AdamW (weight decay 0.01) with linear warmup, then cosine decay (Keras' CosineDecay;
  BERT decays linearly).

Reported on the held-out articles: masked-LM accuracy (of the chosen tokens) and
next-sentence accuracy. Saves the backbone (backbone.keras) and vocab.txt in --output for
examples/finetune_bert.py; draws the self-attention maps of a held-out pair; exports the
pretraining model for TF Serving and checks the export.

Full run:

    KERAS_BACKEND=jax python examples/pretrain_bert.py --epochs 5 --output runs/pretrain_bert

Checkpoints: --output/backup/ (BackupAndRestore every --backup-every steps: a killed run
started again with the same command resumes from its last backup, restarting the
interrupted epoch from its first batch with the backed-up weights and optimizer state) and
--output/checkpoints/. TensorBoard logs go to --output/logs/ when tensorboard is installed.

CI smoke run (under a minute on 2 CPU cores):

    KERAS_BACKEND=jax python examples/pretrain_bert.py --smoke --output /tmp/pretrain_bert
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import keras
import numpy as np

from keras_transformers.losses import SparseCategoricalCrossentropy
from keras_transformers.models.bert import bert, bert_pretraining

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELD_OUT = 1000  # test.tsv's first articles, never trained on
AGNEWS_URL = "https://raw.githubusercontent.com/forest-snow/alps/master/data/agnews/"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.path.join(REPO_ROOT, "..", "shared", "data"),
                        help="folder holding agnews/{dev,test}.tsv (downloaded there when absent)")
    parser.add_argument("--output", default=os.path.join(REPO_ROOT, "runs", "pretrain_bert"))
    parser.add_argument("--export-dir", default=os.path.join(REPO_ROOT, "saved_models", "bert_pretraining"))
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=128)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--intermediate-dim", type=int, default=512)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--max-predictions", type=int, default=10, help="masked positions per sequence")
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    parser.add_argument("--vocabulary", default=None, help="a BERT vocab.txt to use instead of learning one")
    parser.add_argument("--duplicates", type=int, default=5, help="passes over the corpus (dupe_factor)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-fraction", type=float, default=0.05)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training articles")
    parser.add_argument("--backup-every", type=int, default=100, help="steps between backups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny and fast, for CI")
    parser.add_argument("--kill-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = min(args.epochs, 2)
        args.batch_size = min(args.batch_size, 32)
        args.num_layers, args.hidden_dim, args.num_heads, args.intermediate_dim = 1, 32, 2, 64
        args.vocabulary_size, args.sequence_length, args.max_predictions = 500, 48, 8
        args.train_limit = args.train_limit or 400
        args.duplicates = 1
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


def agnews_path(data_dir, name):
    """agnews/<name>.tsv in --data-dir, fetched from its upstream copy when absent."""
    path = os.path.join(data_dir, "agnews", f"{name}.tsv")
    if os.path.exists(path):
        return path
    return keras.utils.get_file(
        f"{name}.tsv", AGNEWS_URL + f"{name}.tsv",
        cache_dir=os.path.abspath(data_dir), cache_subdir="agnews",
    )


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    import keras_hub

    from keras_transformers.data import bert as bert_data

    # 1. The corpus: AG News articles as documents of sentences.
    test_articles = bert_data.read_agnews(agnews_path(args.data_dir, "test"))
    train_documents = bert_data.read_agnews(agnews_path(args.data_dir, "dev")) + test_articles[HELD_OUT:]
    held_out_documents = test_articles[:HELD_OUT]
    if args.train_limit:
        train_documents = train_documents[: args.train_limit]
    if args.smoke:
        held_out_documents = held_out_documents[:64]

    # 2. The WordPiece vocabulary (uncased, BERT's special tokens first).
    vocabulary_path = os.path.join(args.output, "vocab.txt")
    if args.vocabulary:
        with open(args.vocabulary, encoding="utf-8") as f:
            vocabulary = [line.rstrip("\n") for line in f]
        with open(vocabulary_path, "w", encoding="utf-8") as f:
            f.write("\n".join(vocabulary) + "\n")
    else:
        started = time.time()
        vocabulary = bert_data.word_piece_vocabulary(
            [" ".join(document) for document in train_documents], args.vocabulary_size,
            path=vocabulary_path,
        )
        print(f"Vocabulary: {len(vocabulary)} word pieces ({time.time() - started:.0f} s).")
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary, lowercase=True, strip_accents=True
    )

    # 3. Next-sentence pairs, masked on the fly; the held-out masks are drawn once.
    train_pairs = bert_data.nsp_pairs(train_documents, seed=args.seed, duplicates=args.duplicates)
    held_out_pairs = bert_data.nsp_pairs(held_out_documents, seed=args.seed + 1)
    print(f"{len(train_pairs)} training pairs, {len(held_out_pairs)} held-out pairs.")
    data_options = dict(
        tokenizer=tokenizer, sequence_length=args.sequence_length,
        max_predictions=args.max_predictions, batch_size=args.batch_size,
    )
    train_data = bert_data.pretraining_dataset(
        train_pairs, shuffle=True, seed=args.seed, drop_remainder=True, **data_options
    )
    held_out_data = bert_data.pretraining_dataset(held_out_pairs, cache_masks=True, **data_options)

    # 4. The model: a BERT backbone with the masked-LM and next-sentence heads.
    backbone = bert(
        vocabulary_size=len(vocabulary),
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        max_sequence_length=args.sequence_length,
    )
    model = bert_pretraining(backbone)
    model.summary()

    steps = args.epochs * (len(train_pairs) // args.batch_size)
    warmup = max(1, int(args.warmup_fraction * steps))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - warmup), warmup_target=args.learning_rate, warmup_steps=warmup
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01, epsilon=1e-6)
    # LayerNorm scales, biases and embeddings are not decayed (as BERT's optimizer).
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias", "embeddings"])
    model.compile(
        optimizer=optimizer,
        loss={
            # The sample weights (mask_weights) keep padded prediction slots out of the mean.
            "mlm_logits": SparseCategoricalCrossentropy(from_logits=True),
            "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        weighted_metrics={
            "mlm_logits": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            "nsp_logits": keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        },
    )

    # 5. Training with checkpoints and resumption.
    record_start = RecordStart()
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(args.output, "backup"), save_freq=args.backup_every),
        record_start,
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output, "checkpoints", "epoch_{epoch:02d}.weights.h5"),
            save_weights_only=True,
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
        train_data, validation_data=held_out_data, epochs=args.epochs, callbacks=callbacks,
        shuffle=False,
    )
    train_minutes = (time.time() - started) / 60

    # 6. Held-out masked-LM and next-sentence accuracy.
    results = model.evaluate(held_out_data, return_dict=True)
    print(
        f"Held-out masked-LM accuracy {results['mlm_logits_accuracy']:.4f}, "
        f"next-sentence accuracy {results['nsp_logits_accuracy']:.4f}"
    )

    # 7. The backbone and its vocabulary, for examples/finetune_bert.py --backbone.
    backbone_path = os.path.join(args.output, "backbone.keras")
    backbone.save(backbone_path)

    # 8. Attention maps of one held-out pair; export and check.
    inputs = next(iter(held_out_data))[0]
    inputs = {name: x.numpy()[:1] for name, x in inputs.items()}
    pictures = draw(backbone, tokenizer, inputs, args)
    export = export_and_check(model, {name: x[:4] for name, x in next(iter(held_out_data))[0].items()}, args)

    metrics = {
        "backend": keras.backend.backend(),
        "command": "python examples/pretrain_bert.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "smoke": args.smoke,
        "corpus": "AG News (../shared/data/agnews dev.tsv + test.tsv[1000:]); held out: test.tsv[:1000]",
        "train_pairs": len(train_pairs),
        "held_out_pairs": len(held_out_pairs),
        "initial_step": record_start.initial_step,
        "train_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "train_minutes": train_minutes,
        "held_out_mlm_accuracy": results["mlm_logits_accuracy"],
        "held_out_nsp_accuracy": results["nsp_logits_accuracy"],
        "held_out_loss": results["loss"],
        "history": history.history,
        "vocabulary_size": len(vocabulary),
        "parameters": backbone.count_params(),
        "backbone": backbone_path,
        "pictures": pictures,
        "export": export,
        "config": vars(args),
    }
    with open(os.path.join(args.output, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    print(json.dumps({k: metrics[k] for k in ("held_out_mlm_accuracy", "held_out_nsp_accuracy", "train_minutes")}))
    return metrics


def draw(backbone, tokenizer, inputs, args):
    """self_attention.png: every layer and head on one held-out pair."""
    from keras_transformers import visualize

    length = int(inputs["padding_mask"][0].sum())
    inputs = {name: x[:, :length] for name, x in inputs.items() if name != "mask_positions"}
    vocabulary = tokenizer.get_vocabulary()
    tokens = [vocabulary[i] for i in inputs["token_ids"][0]]
    path = os.path.join(args.output, "self_attention.png")
    visualize.plot_attention_maps(
        visualize.attention_scores(backbone, inputs), tokens, tokens, path,
        title="BERT self-attention on a held-out pair ([MASK]ed as in training)",
    )
    return {"self_attention": path}


def export_and_check(model, inputs, args):
    """Exports with export_saved_model and compares the reloaded serving_default with the model."""
    import tensorflow as tf

    from keras_transformers.export import export_saved_model

    path = export_saved_model(model, args.export_dir, version=args.version, overwrite=True)
    inputs = {name: np.asarray(x) for name, x in inputs.items()}
    expected = model(inputs, training=False)
    serving = tf.saved_model.load(path).signatures["serving_default"]
    served = serving(**{name: tf.constant(x) for name, x in inputs.items()})
    difference = max(
        float(np.max(np.abs(served[name].numpy() - keras.ops.convert_to_numpy(expected[name]))))
        for name in ("mlm_logits", "nsp_logits")
    )
    if not difference < 1e-4:
        raise RuntimeError(f"The SavedModel differs from the model by {difference}")
    print(f"Exported to {path}; serving_default matches the model (max |diff| {difference:.2e}).")
    return {"path": path, "max_abs_difference": difference}


if __name__ == "__main__":
    main()
