"""tf.data input pipelines over the real data sets the examples train on.

The modules here import TensorFlow (tf.data runs on every Keras backend), so this package
imports none of them: import the one you need, e.g.
`from keras_transformers.data import language_modeling`.

- `language_modeling`: Tiny Shakespeare, as characters or GPT-2 BPE tokens, in windows
  for next-token prediction.
- `mnist`: the MNIST idx files, a stratified seeded train/validation split, image batches.
- `translation`: Multi30k de->en, a shared WordPiece vocabulary learned on the training
  split, teacher-forcing batches.
- `bert`: AG News sentences as MLM + NSP pretraining examples, and SST-2 for fine-tuning.
- `tfds_builders`: TFDS builders over the local Multi30k, SST-2, AG News and MNIST files
  (`local_sst2`, ...: the features of `glue/sst2`, `ag_news_subset`, `mnist`), and `load`.

`tinyshakespeare_sample.txt` (the first ~20 KB of Tiny Shakespeare) is packaged as a last
resort when neither the shared data folder nor a download is available.
"""
