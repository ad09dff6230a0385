"""Corpora for text VAEs: TFDS preparation, vocabulary, encoding, batching."""

from cvae_jax.data.batching import RandomBatches
from cvae_jax.data.batching import eval_batches
from cvae_jax.data.batching import steps_per_epoch
from cvae_jax.data.batching import train_batches
from cvae_jax.data.corpus import Corpus
from cvae_jax.data.corpus import Split
from cvae_jax.data.loading import load_corpus
from cvae_jax.data.vocab import BOS
from cvae_jax.data.vocab import EOS
from cvae_jax.data.vocab import PAD
from cvae_jax.data.vocab import UNK
from cvae_jax.data.vocab import Vocab
