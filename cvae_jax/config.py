"""The default configuration; each file in configs/ starts from it.

Field names are the project's public interface: run commands and docs use
them as `--config.<group>.<field>=value`.
"""

import ml_collections

from cvae_jax import parallel
from cvae_jax.errors import CvaeError
from cvae_jax.models import ModelConfig, posteriors


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by every dataset; every field is commented."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root of every random stream: init, data order, train, eval

  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"  # 'ptb' | 'yahoo' | 'yelp13' | 'synthetic'
  d.source_dir = ""  # folder with train.txt/valid.txt/test.txt; '' downloads
  d.tfds_dir = ""  # where TFDS prepares the data; '' is TFDS's default
  d.max_vocab_size = 20_000  # specials included
  d.max_length = 200  # words per example; a longer one is an error
  d.batch_size = 32  # global training batch, split over all devices
  d.eval_batch_size = 64  # global evaluation batch
  # Padded token lengths (<s> and </s> included): one compiled step each. On
  # PTB these pad 9% of the tokens; (16, 24, 32, 48, 64, 96, 128, 202) padded 18%.
  d.bucket_lengths = (12, 16, 20, 24, 28, 32, 40, 48, 64, 80, 96, 128, 160, 202)
  d.synthetic = s = ml_collections.ConfigDict()
  s.seed = 0  # the generating decoder's weights and the sentences
  s.latent_dim = 2  # dimension of the true latent
  s.vocab_size = 500  # word types
  s.hidden_dim = 64  # the generating LSTM's width
  s.max_length = 20  # words per sentence at most
  s.num_train, s.num_valid, s.num_test = 10_000, 1_000, 1_000  # sentences per split

  c.model = m = ml_collections.ConfigDict()
  # 'none' (LSTM-LM) | 'gaussian' (VAE) | 'copula' (the paper's) | 'coupled_copula'
  # (the copula's dependency in z) | 'flexible_copula' (and sinh-arcsinh marginals) |
  # 'vmf' (von Mises-Fisher) | 'flow' (VAE-NF) | 'full_gaussian' (non-diag-VAE)
  m.posterior = "copula"
  m.copula_weight = 0.5  # lambda, weight of log c(q) + sum_i log q(z_i|x) (copula only)
  m.emb_dim = 512  # word embedding size (shared by encoder and decoder)
  m.hidden_dim = 512  # LSTM width of encoder and decoder
  m.latent_dim = 32  # z
  m.dropout = 0.5  # on input embeddings
  # Word dropout (Bowman et al. 2016): in training, each word of the decoder's
  # input becomes <unk> with this probability (<s>, </s> and padding never do).
  m.word_dropout = 0.0
  m.output_dropout = 0.0  # on decoder outputs
  m.feed_latent = False  # also feed z at every decoder step (He et al. 2019)
  m.dtype = "float32"  # matmul dtype; 'bfloat16' for GPU/TPU (losses stay f32)
  # BN-VAE (Zhu et al. 2020): the posterior means' BatchNorm gets this fixed
  # scale gamma and a learned shift; 0 = off (a learned scale, as in the paper).
  m.bn_gamma = 0.0
  # von Mises-Fisher posterior (Xu & Durrett 2018): its fixed concentration;
  # the KL to the uniform prior on the sphere is a constant set by it (5.76
  # nats at Z 32: the paper's vMF-VAE KL on PTB). 25 beat 80 on PTB validation
  # at the Fig. 4 size (-ELBO 106.76 against 113.84, docs/results.md).
  m.vmf_kappa = 25.0
  m.flow_steps = 4  # planar flows K of the 'flow' posterior (Rezende & Mohamed 2015)

  c.train = t = ml_collections.ConfigDict()
  t.num_epochs = 30  # used when num_steps <= 0
  t.num_steps = 0  # total train steps; overrides num_epochs when > 0
  t.learning_rate = 1e-3  # Adam
  t.grad_clip = 5.0  # global gradient norm
  t.kl_anneal_start = 0  # step where beta starts rising from 0
  t.kl_anneal_steps = 10_000  # steps from beta 0 to 1 (0: a jump at start)
  # Cyclical annealing (Fu et al. 2019): > 0 replaces the linear ramp by this
  # many cycles over [kl_anneal_start, end of training); in each, beta rises
  # linearly from 0 to 1 over the fraction kl_cycle_rise, then stays 1.
  t.kl_cycles = 0
  t.kl_cycle_rise = 0.5  # in (0, 1]
  # Free bits (Kingma et al. 2016; Li et al. 2019): target nats per latent
  # dimension; a dimension whose batch-averaged KL is below it is not penalised
  # (a posterior whose KL does not split by dimension is one group of
  # latent_dim dimensions). 0 = off.
  t.free_bits = 0.0
  # Lagging encoder (He et al. 2019): in the aggressive phase each step first
  # updates the encoder alone (encoder LSTM and posterior head) on the step's
  # batch and then on random training batches, until the loss per token of
  # the last `aggressive_check_every` of them is not below that of the ones
  # before (at most `aggressive_max_inner`), then the decoder and embedding
  # alone on the step's batch. The phase ends for good at the first validation
  # whose `mi` (the batch-aggregate I_q, as their calc_mi) is not above the
  # previous validation's; then the steps are joint. That `mi` is at most
  # log eval_batch_size (4.16 nats at 64): once near it, it can hardly rise and
  # the phase ends. Not for posterior 'none'.
  t.aggressive = False
  t.aggressive_max_inner = 100  # encoder steps per training step at most
  t.aggressive_check_every = 15  # encoder steps per convergence check
  # Autoencoder pretraining (Li et al. 2019): steps [0, N) have beta 0; at step
  # N the decoder (LSTM, z -> state, softmax; not the shared embedding) gets
  # fresh parameters and Adam state. kl_anneal_start and plateau_start count
  # from N, and validations up to N are not tracked (no best, no patience).
  # 0 = off; use it with free_bits as they do. Not for posterior 'none'.
  t.ae_pretrain_steps = 0
  t.log_every = 100  # steps between train-metric logs
  t.checkpoint_every = 1_000  # steps between checkpoints (and at the end)
  t.eval_every = 0  # steps between validation passes; 0 = once per epoch
  t.keep_checkpoints = 2  # latest checkpoints kept for resuming
  # Plateaus of the validation -ELBO, counted in validation passes (0 disables;
  # see cvae_jax/plateau.py). After `lr_decay_patience` passes without a new
  # best, training continues from the best checkpoint with the learning rate
  # times `lr_decay_factor`, at most `max_lr_decays` times; after
  # `early_stop_patience` passes without a new best (none due to decay) it stops.
  t.lr_decay_patience = 0
  t.lr_decay_factor = 0.5
  t.max_lr_decays = 0
  t.early_stop_patience = 0
  t.plateau_start = 0  # passes before this step never count towards patience

  c.eval = e = ml_collections.ConfigDict()
  e.iw_samples = 500  # K for the importance-weighted NLL (launch/evaluate.py)
  e.iw_chunk_tokens = 16_384  # decoded tokens (samples x rows x length) at once
  e.train_iw_samples = 0  # K during training's validation passes; 0 = no IW
  e.au_threshold = 0.01  # active unit: Var_x E_q[z_i] >= threshold
  return c


def corpus_config(name: str, copula_weight: float, variant: str) -> ml_collections.ConfigDict:
  """The recipe for a real corpus (`variant` 'tiny' for the smoke run).

  Regularised as the reference text-VAE implementations are: dropout 0.5 on
  the embeddings and on the decoder outputs, KL annealed from the first step
  over 10K steps; validated every epoch, the learning rate halved from the
  best checkpoint after 2 epochs without improvement (at most 4 times), and
  stopped after 2 more such epochs with no decay left (He et al. 2019).
  """
  c = base_config()
  c.data.name = name
  c.model.copula_weight = copula_weight  # the paper's best lambda for the corpus
  c.model.output_dropout = 0.5
  c.train.num_epochs = 40  # an upper bound: the plateau rule ends a run earlier
  c.train.kl_anneal_start = 0
  c.train.kl_anneal_steps = 10_000
  c.train.lr_decay_patience = 2
  c.train.max_lr_decays = 4
  c.train.early_stop_patience = 2
  c.train.plateau_start = c.train.kl_anneal_steps
  return tiny(c) if variant == "tiny" else c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A seconds-long smoke variant of `c` (select with `--config file.py:tiny`)."""
  c.model.emb_dim = c.model.hidden_dim = 32
  c.model.latent_dim = 4
  c.data.batch_size = c.data.eval_batch_size = 16
  c.data.bucket_lengths = (16, 32, 64, 128, 202)  # few shapes, few compilations
  c.train.num_steps = 40
  c.train.log_every = c.train.eval_every = 20
  c.train.checkpoint_every = 20
  c.train.kl_anneal_steps = 20
  c.eval.iw_samples = 10
  c.data.synthetic.num_train, c.data.synthetic.num_valid = 800, 100
  c.data.synthetic.num_test = 100
  return c


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises CvaeError for a config that cannot run, before anything is written."""
  posteriors.check_name(c.model.posterior)
  if c.data.max_length + 2 > max(c.data.bucket_lengths):
    raise CvaeError(f"config.data.max_length={c.data.max_length} (+2 for <s>, </s>) "
                    f"exceeds the largest of config.data.bucket_lengths "
                    f"{tuple(c.data.bucket_lengths)}")
  for field in ("batch_size", "eval_batch_size"):
    parallel.check_batch_size(c.data[field], f"config.data.{field}")
  m, t = c.model, c.train
  if not 0 <= m.word_dropout < 1:
    raise CvaeError(f"config.model.word_dropout={m.word_dropout} must lie in [0, 1)")
  if not 0 < t.kl_cycle_rise <= 1:
    raise CvaeError(f"config.train.kl_cycle_rise={t.kl_cycle_rise} must lie in (0, 1]")
  for field, value in (("model.bn_gamma", m.bn_gamma), ("train.free_bits", t.free_bits),
                       ("train.kl_cycles", t.kl_cycles),
                       ("train.ae_pretrain_steps", t.ae_pretrain_steps)):
    if value < 0:
      raise CvaeError(f"config.{field}={value} must not be negative")
  for field in ("aggressive_max_inner", "aggressive_check_every"):
    if t[field] < 1:
      raise CvaeError(f"config.train.{field}={t[field]} must be at least 1")
  model = model_config(c, vocab_size=0)
  for field in ("aggressive", "ae_pretrain_steps"):
    if t[field] and not model.has_latent:
      raise CvaeError(f"config.train.{field}={t[field]!r} needs an encoder; "
                      f"config.model.posterior={m.posterior!r} has none")
  if model.has_latent:
    posteriors.build(model)  # a posterior refuses the settings that do not apply to it


def model_config(c: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  """The frozen model config from `config.model`, the one place they meet."""
  m = c.model
  return ModelConfig(vocab_size=vocab_size, emb_dim=m.emb_dim,
                     hidden_dim=m.hidden_dim, latent_dim=m.latent_dim,
                     posterior=m.posterior, copula_weight=m.copula_weight,
                     dropout=m.dropout, output_dropout=m.output_dropout,
                     word_dropout=m.word_dropout, feed_latent=m.feed_latent,
                     dtype=m.dtype, bn_gamma=m.bn_gamma, vmf_kappa=m.vmf_kappa,
                     flow_steps=m.flow_steps)


def flat_fields(tree: dict, prefix: str = "") -> dict:
  """A nested config dict as {'group.field': value}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat_fields(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
