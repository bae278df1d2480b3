"""Translate German to English with the Transformer of "Attention Is All You Need".

Vaswani et al. (2017) on Multi30k task 1 (Elliott et al. 2016): 29,000 image captions in
German and English for training, `val` (1,014) for validation, `test_2016_flickr` (1,000)
for BLEU. The recipe is the paper's, scaled to a small data set:

- one WordPiece vocabulary shared by both languages (the paper shares a BPE vocabulary,
  section 5.1), learned with keras-hub on the training captions and cached in --output;
  text is lowercased;
- the post-norm encoder-decoder, shared and tied embeddings (section 3.4);
- teacher forcing: the decoder reads [START] + target and predicts target + [END];
- cross-entropy with label smoothing 0.1 (section 5.4), padding left out of the loss;
- Adam(beta_2=0.98, epsilon=1e-9) with the paper's schedule (section 5.3, equation 3)
  lrate = scale * d^-0.5 * min(step^-0.5, step * warmup^-1.5), here with d = 256,
  warmup 1,000 steps and scale 0.5 (a peak of 1e-3: 29,000 pairs give only ~226 steps
  an epoch, so the paper's 4,000 warmup steps would last 18 epochs);
- greedy and beam-search decoding (4 beams, length penalty 0.6 as the paper's section
  6.1) with the KV cache of `keras_transformers.generation.generate`;
- corpus BLEU on test_2016_flickr with keras-hub's `Bleu` (its default tokenizer
  replicates sacreBLEU's "13a"), on lowercased text: hypotheses are the detokenized
  WordPiece output, references the lowercased captions.

Then it draws the positional encoding (20 positions x 512 dimensions) and the
cross-attention maps of a test sentence, exports the model for TF Serving and checks the
export by reloading it.

Full run (the target is >= 30 BLEU on test_2016_flickr; on TensorFlow and 2 CPU cores it gave
40.00 BLEU with beam search and 38.24 greedy after 82 minutes of training):

    KERAS_BACKEND=tensorflow python examples/translate.py --epochs 15 --output runs/translate

CI smoke run (under a minute on 2 CPU cores; tiny model, 1,000 pairs):

    KERAS_BACKEND=jax python examples/translate.py --smoke --output /tmp/translate

Outputs in --output: vocab.txt, logs/ (TensorBoard, when tensorboard is installed),
backup/ (BackupAndRestore every --backup-every steps: a killed run started again with the
same command resumes from its last backup, restarting the interrupted epoch from its first
batch with the backed-up weights and optimizer state), checkpoints/, metrics.json,
positional_encoding.png, cross_attention.png; the SavedModel goes to
--export-dir/<version>/ (default saved_models/transformer_multi30k/1/).
"""

import argparse
import os
import time

import keras
import numpy as np

from keras_transformers.losses import SparseCategoricalCrossentropy
from keras_transformers.models.transformer import transformer
from keras_transformers.schedules import TransformerSchedule

import common  # examples/common.py


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_arguments(
        parser,
        data_help="folder holding multi30k/ (downloaded there when absent)",
        output=os.path.join(common.REPO_ROOT, "runs", "translate"),
        export_dir=os.path.join(common.REPO_ROOT, "saved_models", "transformer_multi30k"),
        backup_every=100, epochs=15, batch_size=128,
    )
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--intermediate-dim", type=int, default=512)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sentence, specials included")
    parser.add_argument("--buckets", type=int, nargs="*", default=[16, 24, 32, 48],
                        help="lengths batches are padded to (fewer: fewer compilations)")
    parser.add_argument("--warmup-steps", type=int, default=1000)
    parser.add_argument("--lr-scale", type=float, default=0.5,
                        help="factor on the paper's schedule (peak 1e-3 at step 1000 for d=256)")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=0.6)
    parser.add_argument("--train-limit", type=int, default=None, help="use the first N training pairs")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    common.add_tfds_arguments(parser, "local_multi30k")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = min(args.epochs, 2)
        args.batch_size = min(args.batch_size, 32)
        args.num_layers, args.hidden_dim, args.num_heads, args.intermediate_dim = 1, 32, 2, 64
        args.vocabulary_size, args.max_length, args.warmup_steps = 400, 24, 20
        args.train_limit = args.train_limit or 640
        args.buckets = []  # one shape: one compilation
        args.num_beams = 2
    return args


def translate(model, tokenizer, sources, args, sampler, batch_size=100):
    """Translations of `sources` (str) with greedy or beam decoding, KV-cached."""
    from keras_transformers.data import translation
    from keras_transformers.generation import generate

    hypotheses = []
    batch_size = min(batch_size, len(sources))
    for start in range(0, len(sources), batch_size):
        chunk = list(sources[start : start + batch_size])
        rows = len(chunk)
        chunk += [""] * (batch_size - rows)  # one batch shape: one compilation
        inputs = translation.encode_sources(chunk, tokenizer, args.max_length)
        padded = {
            name: np.pad(x, [(0, 0), (0, args.max_length - x.shape[1])])
            for name, x in inputs.items()
        }
        options = dict(num_beams=args.num_beams, length_penalty=args.length_penalty) if sampler == "beam" else {}
        outputs = generate(
            model, padded, max_new_tokens=args.max_length - 1, sampler=sampler,
            stop_token_ids=[translation.END_ID], start_token_id=translation.START_ID,
            max_sequence_length=args.max_length, **options,
        )
        hypotheses += translation.detokenize(tokenizer, outputs["token_ids"][:rows, 1:])
    return hypotheses


def corpus_bleu(references, hypotheses):
    """Corpus BLEU x 100 with keras-hub (sacreBLEU 13a tokenization), lowercased."""
    import keras_hub

    bleu = keras_hub.metrics.Bleu()
    bleu.update_state([[r.lower()] for r in references], [h.lower() for h in hypotheses])
    return 100.0 * float(keras.ops.convert_to_numpy(bleu.result()))


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output, exist_ok=True)
    # The data pipelines use tf.data (TensorFlow is installed with every backend).
    from keras_transformers.data import translation

    # 1. Data: Multi30k from --data-dir, or its upstream repository for users with internet.
    folder = os.path.join(args.data_dir, "multi30k")
    download = not os.path.exists(os.path.join(folder, "train.de.gz"))
    if args.tfds:  # the same records through the local_multi30k TFDS builder
        from keras_transformers.data import tfds_builders

        (train_de, train_en), (val_de, val_en), (test_de, test_en) = (
            tfds_builders.multi30k_texts(split, folder, args.tfds_dir)
            for split in ("train", "validation", "test_2016_flickr")
        )
    else:
        train_de, train_en = translation.load_multi30k(folder, "train", "de", "en", download)
        val_de, val_en = translation.load_multi30k(folder, "val", "de", "en", download)
        test_de, test_en = translation.load_multi30k(folder, "test_2016_flickr", "de", "en", download)
    if args.train_limit:
        train_de, train_en = train_de[: args.train_limit], train_en[: args.train_limit]
    if args.smoke:
        val_de, val_en, test_de, test_en = val_de[:64], val_en[:64], test_de[:16], test_en[:16]

    # 2. One WordPiece vocabulary for both languages, learned on the training split.
    started = time.time()
    vocabulary = translation.word_piece_vocabulary(
        train_de + train_en, args.vocabulary_size, path=os.path.join(args.output, "vocab.txt")
    )
    tokenizer = translation.word_piece_tokenizer(vocabulary)
    print(f"Vocabulary: {len(vocabulary)} word pieces ({time.time() - started:.0f} s).")
    train_data = translation.translation_dataset(
        train_de, train_en, tokenizer, args.batch_size, args.max_length,
        shuffle=True, seed=args.seed, bucket_boundaries=args.buckets, drop_remainder=True,
    )
    val_data = translation.translation_dataset(
        val_de, val_en, tokenizer, args.batch_size, args.max_length, bucket_boundaries=args.buckets
    )
    if args.steps_per_epoch:
        train_data = train_data.repeat()

    # 3. The model: shared source/target embeddings, tied output projection (section 3.4).
    model = transformer(
        encoder_vocabulary_size=len(vocabulary),
        decoder_vocabulary_size=len(vocabulary),
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        max_sequence_length=args.max_length,
        dropout=args.dropout,
        share_embeddings=True,
        name="transformer_multi30k",
    )
    model.summary()

    # 4. Section 5.3's optimizer and schedule; section 5.4's label smoothing. The
    # sample weights (0 on padding) keep padded positions out of loss and accuracy.
    model.compile(
        optimizer=keras.optimizers.Adam(
            TransformerSchedule(args.hidden_dim, args.warmup_steps, scale=args.lr_scale),
            beta_1=0.9, beta_2=0.98, epsilon=1e-9,
        ),
        loss=SparseCategoricalCrossentropy(label_smoothing=args.label_smoothing, from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )

    # 5. Training with checkpoints and resumption.
    callbacks, initial_step = common.fit_callbacks(args, checkpoint="best.weights.h5", monitor="val_loss")
    started = time.time()
    history = model.fit(
        train_data, validation_data=val_data, epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch, callbacks=callbacks, shuffle=False,
    )
    train_minutes = (time.time() - started) / 60
    # The last epoch's weights, unless an earlier epoch validated better.
    best = os.path.join(args.output, "checkpoints", "best.weights.h5")
    if os.path.exists(best):
        model.load_weights(best)

    # 6. Corpus BLEU on test_2016_flickr, greedy and beam search.
    started = time.time()
    greedy = translate(model, tokenizer, test_de, args, "greedy")
    beam = translate(model, tokenizer, test_de, args, "beam")
    decode_minutes = (time.time() - started) / 60
    bleu_greedy, bleu_beam = corpus_bleu(test_en, greedy), corpus_bleu(test_en, beam)
    for i in range(3):
        print(f"DE: {test_de[i]}\nEN: {test_en[i]}\ngreedy: {greedy[i]}\nbeam: {beam[i]}\n")
    print(f"test_2016_flickr BLEU: greedy {bleu_greedy:.2f}, beam {bleu_beam:.2f}")

    # 7. Pictures: the positional encoding, and where each English token looked in the
    # German source (the cross-attention of every decoder layer and head).
    pictures = draw(model, tokenizer, test_de[0], beam[0] or greedy[0], args)

    # 8. Export for TF Serving, then reload the SavedModel and compare it with the model.
    data = translation.translation_dataset(test_de[:4], test_en[:4], tokenizer, 4, args.max_length)
    inputs = {name: x.numpy() for name, x in next(iter(data))[0].items()}
    export = common.export_and_check(model, inputs, args, max_sequence_length=args.max_length)

    metrics = {
        "backend": keras.backend.backend(),
        "command": common.command_line("translate.py", argv),
        "smoke": args.smoke,
        "epochs": args.epochs,
        "initial_step": initial_step.initial_step,
        "train_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "train_minutes": train_minutes,
        "decode_minutes": decode_minutes,
        "train_loss": history.history["loss"][-1] if history.history.get("loss") else None,
        "val_loss": history.history["val_loss"][-1] if history.history.get("val_loss") else None,
        "val_accuracy": history.history["val_accuracy"][-1] if history.history.get("val_accuracy") else None,
        "history": history.history,
        "test_bleu_greedy": bleu_greedy,
        "test_bleu_beam": bleu_beam,
        "bleu": "keras_hub.metrics.Bleu (sacreBLEU 13a tokenization), lowercased, corpus level",
        "test_sentences": len(test_de),
        "vocabulary_size": len(vocabulary),
        "parameters": model.count_params(),
        "pictures": pictures,
        "export": export,
        "config": {k: v for k, v in vars(args).items()},
    }
    common.write_metrics(
        args.output, metrics, summary=("test_bleu_greedy", "test_bleu_beam", "val_loss", "train_minutes"))
    return metrics


def draw(model, tokenizer, source, translation_text, args):
    """positional_encoding.png and cross_attention.png in --output."""
    from keras_transformers import visualize
    from keras_transformers.data import translation

    paths = {
        "positional_encoding": os.path.join(args.output, "positional_encoding.png"),
        "cross_attention": os.path.join(args.output, "cross_attention.png"),
    }
    visualize.plot_positional_encoding(paths["positional_encoding"], length=20, depth=512)
    inputs = translation.encode_sources([source], tokenizer, args.max_length)
    target_ids = [translation.START_ID] + list(tokenizer([translation_text])[0][: args.max_length - 1])
    inputs["decoder_token_ids"] = np.array([target_ids], "int32")
    inputs["decoder_padding_mask"] = np.ones_like(inputs["decoder_token_ids"])
    scores = visualize.attention_scores(model, inputs)
    cross = {name: value for name, value in scores.items() if name.endswith("cross_attention")}
    vocabulary = tokenizer.get_vocabulary()
    source_tokens = [vocabulary[i] for i in inputs["encoder_token_ids"][0]]
    target_tokens = [vocabulary[i] for i in target_ids]
    visualize.plot_attention_maps(
        cross, target_tokens, source_tokens, paths["cross_attention"],
        title="cross-attention: English (rows) over German (columns)",
    )
    return paths


if __name__ == "__main__":
    main()
