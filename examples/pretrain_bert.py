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
import os
import time

import keras

from keras_transformers.losses import SparseCategoricalCrossentropy
from keras_transformers.models.bert import bert, bert_pretraining

import common  # examples/common.py
HELD_OUT = 1000  # test.tsv's first articles, never trained on
AGNEWS_URL = "https://raw.githubusercontent.com/forest-snow/alps/master/data/agnews/"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(
        parser,
        data_help="folder holding agnews/{dev,test}.tsv (downloaded there when absent)",
        output=os.path.join(common.REPO_ROOT, "runs", "pretrain_bert"),
        export_dir=os.path.join(common.REPO_ROOT, "saved_models", "bert_pretraining"),
        backup_every=100, epochs=5, batch_size=64,
    )
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
    common.add_tfds_arguments(parser, "local_ag_news_subset")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = min(args.epochs, 2)
        args.batch_size = min(args.batch_size, 32)
        args.num_layers, args.hidden_dim, args.num_heads, args.intermediate_dim = 1, 32, 2, 64
        args.vocabulary_size, args.sequence_length, args.max_predictions = 500, 48, 8
        args.train_limit = args.train_limit or 400
        args.duplicates = 1
    return args


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    import keras_hub

    from keras_transformers.data import bert as bert_data

    # 1. The corpus: AG News articles as documents of sentences.
    if args.tfds:  # the same records through the local_ag_news_subset TFDS builder (dev.tsv is its train)
        from keras_transformers.data import tfds_builders

        dev_articles, test_articles = (
            tfds_builders.agnews_documents(split, os.path.join(args.data_dir, "agnews"), args.tfds_dir)
            for split in ("train", "test")
        )
    else:
        test_articles = bert_data.read_agnews(common.local_or_download(args.data_dir, "agnews", "test.tsv", AGNEWS_URL))
        dev_articles = bert_data.read_agnews(common.local_or_download(args.data_dir, "agnews", "dev.tsv", AGNEWS_URL))
    train_documents = dev_articles + test_articles[HELD_OUT:]
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
    model.compile(
        optimizer=common.bert_optimizer(args.learning_rate, steps, args.warmup_fraction),
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
    callbacks, initial_step = common.fit_callbacks(
        args, checkpoint="epoch_{epoch:02d}.weights.h5", save_best_only=False)
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
    export = common.export_and_check(model, {name: x[:4] for name, x in next(iter(held_out_data))[0].items()}, args)

    metrics = {
        "backend": keras.backend.backend(),
        "command": common.command_line("pretrain_bert.py", argv),
        "smoke": args.smoke,
        "corpus": "AG News (../shared/data/agnews dev.tsv + test.tsv[1000:]); held out: test.tsv[:1000]",
        "train_pairs": len(train_pairs),
        "held_out_pairs": len(held_out_pairs),
        "initial_step": initial_step.initial_step,
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
    common.write_metrics(
        args.output, metrics, summary=("held_out_mlm_accuracy", "held_out_nsp_accuracy", "train_minutes"))
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


if __name__ == "__main__":
    main()
