"""WavePose on Phi-3.5-mini-instruct + LoRA: the original recipe, done right.

Run (one GPU, 80 GB):

    python train.py --config configs/base.py --config.data.dir=/path/to/clips --workdir runs/base

Many GPUs on one host: the default mesh already spreads the base weights over every device
(`mesh.fsdp=-1`) and splits the batch over them; raise `train.batch_size` to a multiple of the
device count. Many hosts: start the same command on every host; a cluster JAX knows (SLURM,
Open MPI, TPU pods, Kubernetes jobsets) is detected, anywhere else pass
`--config.distributed.coordinator_address=HOST0:1234 --config.distributed.num_processes=N
--config.distributed.process_id=I`. Use `mesh.data=<hosts>` so parameters are sharded within a
host and replicated across hosts.

Runtime: not yet measured on a GPU (no figure is claimed); train.py logs
step_time_s, tokens_per_s and MFU every `train.log_every` steps, and the progress bar shows the
ETA.

Memory (`training.state.memory_report`, measured from shapes): 3,821,079,552 frozen base
parameters in bf16 (7.12 GiB); 59.2M trainable parameters in fp32 (LoRA 50.3M, encoder +
bridge 8.8M: 0.22 GiB), 0.22 GiB of gradients and 0.44 GiB of AdamW moments; 8.0 GiB before
activations. The result is WORKDIR/checkpoints (trainable parameters and optimizer state
only), metrics.jsonl / TensorBoard logs, and the evaluation of the validation split in
WORKDIR/eval.json (`python -m wavepose_jax.evaluate --ckpt WORKDIR --data DIR` evaluates any
other clips).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from wavepose_jax.models.lora import DEFAULT_TARGETS, DEFAULT_TRAINABLE


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    # ---- the base language model
    c.llm = ml_collections.ConfigDict()
    # Base weights + tokenizer: a Hugging Face directory, a hub id (optionally `id@revision`) or
    # a path inside the package (`wavepose_jax:assets/...`).
    c.llm.path = "microsoft/Phi-3.5-mini-instruct"
    c.llm.dtype = "bfloat16"  # compute dtype of the LLM (float32 | bfloat16 | float16)
    c.llm.param_dtype = "bfloat16"  # storage dtype of the frozen base weights
    # Rematerialise each decoder layer in the backward pass: ~1/3 more compute, and the step's
    # scratch at batch 1 x 512 tokens falls from 8.5 to 1.5 GiB, at 4 x 1024 from 78 to 6.6 GiB
    # (`python -m wavepose_jax.training.aot`, CPU; benchmarks/README.md).
    c.llm.remat = True
    # One stacked decoder layer run by lax.scan: compiles one layer instead of 32, and 16-bit
    # weights are widened per layer inside the loop (models/phi3.py), so the base never exists
    # in float32 on backends that widen them (XLA:CPU). False: a Python loop over 32 layers.
    c.llm.scan_layers = True
    c.llm.attention_impl = config_dict.placeholder(str)  # None (XLA picks) | "xla" | "cudnn"
    c.llm.adapter = ""  # PEFT LoRA adapter directory to start from ("" = fresh LoRA)

    # ---- LoRA deltas on the fused Phi-3 projections
    c.lora = ml_collections.ConfigDict()
    c.lora.rank = 32  # r (0 disables LoRA)
    c.lora.alpha = 64.0  # scale = alpha / r
    c.lora.dropout = 0.05  # dropout on the LoRA branch input during training
    c.lora.targets = DEFAULT_TARGETS  # regexes over module paths: qkv_proj, o_proj, gate_up_proj, down_proj

    # ---- motion encoder (models/encoder.py EncoderConfig)
    c.encoder = ml_collections.ConfigDict()
    c.encoder.d_model = 256  # width of phi
    c.encoder.num_layers = 8  # transformer layers
    c.encoder.num_heads = 8  # attention heads
    c.encoder.mlp_ratio = 4  # feed-forward width = mlp_ratio * d_model
    c.encoder.dropout = 0.1  # residual dropout (training only)
    c.encoder.state_dim = 32  # width of the learned dynamic_state
    c.encoder.input_gain = 1.0  # signals x gain before the input projection (vs. positions)
    c.encoder.conv_kernel = 1  # frames per input projection: 1 = Dense per frame, k > 1 = temporal conv

    # ---- cross-attention bridge (models/bridge.py BridgeConfig; llm_dim comes from the base)
    c.bridge = ml_collections.ConfigDict()
    c.bridge.d_model = c.encoder.get_ref("d_model")  # bridge width = encoder width
    c.bridge.state_dim = c.encoder.get_ref("state_dim")  # reads the encoder's dynamic_state
    c.bridge.num_queries = 8  # learned event queries = soft tokens per clip
    c.bridge.num_layers = 2  # cross-attention layers
    c.bridge.num_heads = 8  # attention heads
    c.bridge.mlp_ratio = 4  # feed-forward width = mlp_ratio * d_model
    c.bridge.dropout = 0.1  # residual dropout (training only)
    c.bridge.fault_tokens = False  # add the fault head's estimate to every soft token

    # ---- data (inputs.py: what the model sees; dataset.py: training examples and batches)
    c.data = ml_collections.ConfigDict()
    c.data.dir = ""  # directory of clip JSON files; "" = generate a synthetic set in WORKDIR/data
    c.data.synthetic_n = 1000  # clips generated when data.dir is ""
    c.data.synthetic_seed = 0  # seed of the generated training clips
    c.data.synthetic_keypoints = True  # store keypoints in generated clips (False: signals only)
    c.data.synthetic_workers = 1  # processes that write the generated clips
    c.data.val_fraction = 0.1  # fraction of videos held out for validation (split by video_id)
    c.data.seq_len = 300  # frames per clip after pad/truncate
    c.data.target_fps = config_dict.placeholder(float)  # resample clips to this rate (None: keep)
    c.data.normalization = "physical"  # signal normalisation (keeps amplitude; see data/clip.py)
    c.data.rep_channels = False  # also feed the encoder the rep analysis (data/waves.py REP_CHANNELS)
    c.data.fault_channels = False  # and the rules' verdicts per rep and clip (data/faults.py)
    # Prompt budget: every summary of the project's own wave analysis fits (at most 430 tokens
    # with the demo tokenizer, see prompt.py); a longer one is shortened, never refused.
    c.data.max_prompt_tokens = 448
    c.data.max_target_tokens = 256  # feedback text is truncated to this many tokens (+ <|end|>)
    # Padded token lengths (one compiled step per bucket); 768 holds the longest prompt + target.
    c.data.buckets = (128, 256, 384, 512, 768)
    c.data.compact_prompt = False  # shorter PhysicsSummary prompt

    # ---- training
    c.train = ml_collections.ConfigDict()
    c.train.steps = 5000  # optimizer steps
    c.train.batch_size = 4  # global batch (all processes and devices together)
    c.train.grad_accum = 1  # micro-batches per step (batch_size must divide evenly)
    c.train.lr_encoder = 3e-4  # peak learning rate of the motion encoder
    c.train.lr_bridge_lora = 2e-4  # peak learning rate of the bridge, LoRA (and LLM if trained)
    c.train.warmup_steps = 100  # linear warmup from 0
    c.train.min_lr_ratio = 0.1  # cosine decays to this fraction of the peak
    c.train.weight_decay = 0.01  # AdamW decoupled weight decay (matrices only)
    c.train.adam_b1 = 0.9  # AdamW beta1
    c.train.adam_b2 = 0.999  # AdamW beta2
    c.train.adam_eps = 1e-8  # AdamW epsilon
    c.train.clip_norm = 1.0  # global gradient-norm clipping
    c.train.max_bad_steps = 25  # stop when this many steps in a row had a non-finite loss/gradient
    c.train.aux_loss_weight = 0.1  # weight of the wave-dynamics loss on dynamic_state (0: off)
    c.train.fault_loss_weight = 0.0  # weight of the bridge's fault-classification BCE (0: off)
    c.train.trainable = DEFAULT_TRAINABLE  # regexes over parameter paths; (".*",) = full fine-tune
    c.train.seed = 0  # init of encoder/bridge/LoRA, dropout, data order and split
    c.train.log_every = 10  # steps between metric lines
    c.train.eval_every = 500  # steps between validation loss + generated samples (0: never)
    c.train.ckpt_every = 500  # steps between checkpoints (the last step is always saved)
    c.train.keep_checkpoints = 3  # most recent checkpoints kept (the best val_loss is kept too)
    c.train.num_eval_samples = 2  # feedback texts generated at each validation

    # ---- device mesh (sharding.py): sizes multiply to the device count; -1 = the rest
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1  # pure data parallelism (replicated parameters), e.g. across hosts
    c.mesh.fsdp = -1  # data parallelism with base weights sharded over it
    c.mesh.tensor = 1  # tensor (model) parallelism inside each layer

    # ---- multi-host (training/distributed.py): a detected cluster, or the explicit fields below
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""  # "host:port" of process 0 ("": JAX_COORDINATOR_ADDRESS)
    c.distributed.num_processes = 1  # processes in the job (> 1: an explicit multi-process job)
    c.distributed.process_id = 0  # this process's index (explicit jobs)
    c.distributed.auto = True  # let jax.distributed detect a cluster (SLURM, Open MPI, TPU pods, ...)

    # ---- evaluation (evaluate.py) and generation
    c.eval = ml_collections.ConfigDict()
    c.eval.max_new_tokens = 200  # generation budget per clip
    c.eval.batch_size = 4  # clips per evaluation batch
    c.eval.heldout_dir = ""  # clips for the end-of-run evaluation; "" = synthetic (below) or none
    c.eval.synthetic_n = 0  # held-out synthetic clips evaluated at the end (0: skip)
    c.eval.synthetic_seed = 1_000_003  # their seed, never used for training data
    c.eval.ood_n = 0  # clips of the out-of-distribution benchmark (data/othergen.py; 0: skip)
    c.eval.ood_seed = 2024  # its seed
    return c
