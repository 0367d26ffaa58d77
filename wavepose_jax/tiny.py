"""The tiny Phi-3-architecture base model of the CPU demo, and the tokenizer it uses.

    python -m wavepose_jax.tiny --out wavepose_jax/assets/tiny-phi3 [--steps 400] [--seed 0]

writes a real Hugging Face model directory (config.json, model.safetensors in fp32,
tokenizer.json + tokenizer_config.json with the Phi-3 special tokens and chat template,
generation_config.json) that `wavepose_jax.hf.load_pretrained` loads exactly as it loads
Phi-3.5-mini. The committed copy in `wavepose_jax/assets/tiny-phi3/` was made by that command
(run from the repository root: `--out` is relative to the current directory). A bad flag or an
unwritable `--out` is one line on stderr with exit status 2 (see `wavepose_jax.cli`).

What it is:
  * Tokenizer: a byte-fallback BPE in the style of Llama's SentencePiece (metaspace "▁", digits
    split one by one, bytes for anything unseen), trained on a coaching-text corpus, plus
    Phi-3's special tokens `<|endoftext|> <|assistant|> <|system|> <|end|> <|user|>` and
    Phi-3's chat template.
  * Model: Phi-3 architecture (fused qkv/gate_up, RMSNorm, RoPE, GQA), hidden 128, 4 layers,
    4 heads / 2 KV heads, intermediate 384 (about 1.1M parameters).
  * Pre-training: a short next-token run (all parameters) on chat transcripts whose user turn
    is the compact prompt of fine-tuning with random grade and tempo and whose assistant turn
    is a coaching text from `text.compose_feedback` with random faults. The base therefore
    knows the domain's language and the chat format, but nothing about any particular clip:
    which faults a clip has can only reach the text through the motion bridge during
    fine-tuning.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import flags

from wavepose_jax import cli
from wavepose_jax.data.schema import EXERCISES

# Phi-3.5-mini-instruct's chat template (tokenizer_config.json of the hub model).
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI3_SPECIAL_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")


def build_tokenizer(texts, vocab_size: int = 768):
    """A Llama-style byte-fallback BPE tokenizer with Phi-3's special tokens and chat template.

    Returns a `transformers.PreTrainedTokenizerFast`; `save_pretrained` writes it in HF format.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([  # Llama's decoder
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        show_progress=False, min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(list(PHI3_SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>",
        pad_token="<|endoftext|>", padding_side="right", clean_up_tokenization_spaces=False)
    fast.chat_template = PHI3_CHAT_TEMPLATE
    return fast


def coaching_corpus(n: int, seed: int) -> list[tuple[list[dict], str]]:
    """`n` (chat messages, reply) pairs for pre-training the tiny base.

    The messages are the compact prompt fine-tuning uses, built from a summary that carries the
    exercise, the rep count, a random grade and a tempo; the reply is a coaching text with
    random faults. Grade and faults are drawn independently, so the base learns the language
    and the rep-count sentence but no clue about faults.
    """
    from wavepose_jax.data import faults as faults_lib
    from wavepose_jax.data import text as text_lib
    from wavepose_jax.prompt import PhysicsSummary, build_messages

    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        exercise = str(rng.choice(EXERCISES))
        reps = int(rng.integers(1, 16))
        ids = [f.id for f in faults_lib.faults_for(exercise) if rng.random() < 0.3]
        tempo = float(rng.uniform(1.2, 4.5))
        summary = PhysicsSummary(
            exercise=exercise, reps=reps, grade=str(rng.choice(list("ABCDF"))), overall=None,
            smoothness=None, control=None, consistency=None, tempo_sec=round(tempo, 1),
            phases=(), dominant_hz=None)
        text = text_lib.compose_feedback(exercise, reps, ids, tempo, rng)
        pairs.append((build_messages(summary, compact=True), text))
    return pairs


def tiny_phi3_hf_config(tokenizer) -> dict:
    """config.json of the tiny base for `tokenizer` (Phi-3 architecture; vocab rounded up to 64)."""
    vocab = int(-(-len(tokenizer) // 64) * 64)
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "vocab_size": vocab, "hidden_size": 128, "intermediate_size": 384,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
        "max_position_embeddings": 1024, "original_max_position_embeddings": 1024,
        "tie_word_embeddings": False, "attention_bias": False, "attention_dropout": 0.0,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "initializer_range": 0.02,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "torch_dtype": "float32",
    }


def _pack(pairs, tokenizer, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Chat transcripts -> [N, seq_len] token rows and loss masks (assistant turn + <|end|>)."""
    rows, masks = [], []
    for messages, reply in pairs:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(reply, add_special_tokens=False)["input_ids"] + [
            tokenizer.convert_tokens_to_ids("<|end|>")]
        ids = (p + t)[:seq_len]
        m = ([0] * len(p) + [1] * len(t))[:seq_len]
        pad = seq_len - len(ids)
        rows.append(ids + [tokenizer.pad_token_id] * pad)
        masks.append(m + [0] * pad)
    return np.asarray(rows, np.int32), np.asarray(masks, np.float32)


def pretrain(model, tokens: np.ndarray, loss_mask: np.ndarray, *, steps: int, batch_size: int,
             lr: float, seed: int, log_every: int = 100):
    """Next-token pre-training of every parameter (AdamW, warmup + cosine). Returns the model."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx
    from tqdm import tqdm

    graphdef, params = nnx.split(model, nnx.Param)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10), steps, lr * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
    opt_state = tx.init(params)

    def loss_fn(p, x, m):
        logits = nnx.merge(graphdef, p)(x)  # [B, T, V]; right padding is never attended by real tokens
        logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
        nll = -jnp.take_along_axis(logp, x[:, 1:, None], axis=-1)[..., 0]
        w = m[:, 1:]
        return (nll * w).sum() / jnp.maximum(w.sum(), 1.0)

    @jax.jit
    def step(p, o, x, m):
        loss, g = jax.value_and_grad(loss_fn)(p, x, m)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss

    rng = np.random.default_rng(seed)
    bar = tqdm(range(steps), desc="pretrain tiny base", file=sys.stderr)
    for i in bar:
        idx = rng.integers(0, len(tokens), batch_size)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(tokens[idx]),
                                       jnp.asarray(loss_mask[idx]))
        if i % log_every == 0 or i == steps - 1:
            bar.set_postfix(loss=f"{float(loss):.3f}")
    nnx.update(model, params)
    return model


def build(out: str, *, steps: int, seed: int, n_texts: int = 12000, seq_len: int = 112) -> None:
    """Builds the tokenizer, pre-trains the tiny base for `steps` steps and writes both to
    `out` (see the module docstring)."""
    import jax.numpy as jnp
    from flax import nnx

    from wavepose_jax import hf
    from wavepose_jax.models.phi3 import Phi3Config, Phi3ForCausalLM

    t0 = time.time()
    pairs = coaching_corpus(n_texts, seed)
    texts = [m["content"] for msgs, _ in pairs for m in msgs] + [r for _, r in pairs]
    tokenizer = build_tokenizer(texts)
    hf_cfg = tiny_phi3_hf_config(tokenizer)
    config = Phi3Config.from_hf(hf_cfg, dtype=jnp.float32, param_dtype=jnp.float32)
    model = Phi3ForCausalLM(config, rngs=nnx.Rngs(seed))
    tokens, mask = _pack(pairs, tokenizer, seq_len)
    model = pretrain(model, tokens, mask, steps=steps, batch_size=32, lr=3e-3, seed=seed)
    os.makedirs(out, exist_ok=True)
    hf.save_pretrained(model, out, tokenizer=tokenizer)
    end_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end|>", "<|assistant|>", "<|endoftext|>")]
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": tokenizer.bos_token_id, "eos_token_id": end_ids,
                   "pad_token_id": tokenizer.pad_token_id}, f, indent=2)
    print(f"wrote {out} ({len(tokenizer)} tokens, vocab {hf_cfg['vocab_size']}) "
          f"in {time.time() - t0:.0f}s")


COMMAND = cli.Command("python -m wavepose_jax.tiny", __doc__)
_F = COMMAND.flags
flags.DEFINE_string("out", "wavepose_jax/assets/tiny-phi3", "output directory (relative to the "
                    "current directory)", flag_values=_F)
flags.DEFINE_integer("steps", 400, "pre-training steps", lower_bound=1, flag_values=_F)
flags.DEFINE_integer("seed", 0, "random seed of the corpus, tokenizer training and weights",
                     flag_values=_F)


def _run(args, _) -> int:
    os.makedirs(args.out, exist_ok=True)  # an unwritable --out fails now, not after training
    build(args.out, steps=args.steps, seed=args.seed)
    return cli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
