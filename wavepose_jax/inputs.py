"""What the model sees of a clip, the same in training and at inference, and tokenizer ids.

    inputs = model_inputs(clip, tokenizer, spec.data)   # waves, frame mask, prompt ids, ...
    pad = pad_id(tokenizer)

`model_inputs` is the one place that turns a validated clip into model inputs: the clip's
measurement (`data/measure.py`; a clip with nothing to coach is refused here), the normalised
signals and frame mask (`Clip.model_input`, with the rep and fault channels the data spec asks
for) and the prompt ids of its `PhysicsSummary` -- never its LANGUAGE or faults. Training
adds its targets on top (`dataset.build_example`); inference never imports the dataset side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wavepose_jax import prompt as prompt_lib
from wavepose_jax.data.clip import Clip
from wavepose_jax.data.measure import Measurement, measure
from wavepose_jax.spec import DataSpec

END_TOKEN = "<|end|>"


def special_id(tokenizer: Any, token: str) -> int:
    """Id of a special token, e.g. `<|end|>`; ValueError if the tokenizer lacks it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {token} token")
    return int(token_id)


def pad_id(tokenizer: Any) -> int:
    """The id right-padding uses: the tokenizer's pad token, else its eos token."""
    value = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if value is None:
        raise ValueError("tokenizer has neither a pad token nor an eos token")
    return int(value)


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What the model sees of one clip: the same at inference as in training (`model_inputs`)."""

    waves: np.ndarray       # [T, C] f32, T = data.seq_len (`Clip.model_input`)
    frame_mask: np.ndarray  # [T] bool
    prompt_ids: np.ndarray  # [P] int32, the chat prompt of `summary`
    summary: prompt_lib.PhysicsSummary
    measurement: Measurement | None  # reps, tempo, fault verdicts: what the feedback may state
    shortened: str | None = None  # what was cut from a prompt over budget (None: nothing)


def model_inputs(clip: Clip, tokenizer: Any, data: DataSpec) -> ModelInputs:
    """One clip -> the encoder's input and the prompt, exactly as training and inference use them.

    No clip is refused for its prompt: a prompt longer than `prompt_budget(data)` is shortened
    (`prompt.fit_prompt_ids`: phases first, then the compact form; `ModelInputs.shortened`
    says what was cut, for the caller to report).

    Raises:
      NothingToCoach: no rep can be measured in the clip (`data/measure.py`); it gets no
        feedback and trains nothing.
      ValueError: the budget is below even the compact prompt (names the config field).
    """
    measurement = measure(clip)
    measurement.check_coachable(clip.source)
    waves, frame_mask = clip.model_input(data.seq_len, normalization=data.normalization,
                                         target_fps=data.target_fps,
                                         rep_channels=data.rep_channels,
                                         fault_channels=data.fault_channels,
                                         analysis=measurement.analysis)
    summary = prompt_lib.PhysicsSummary.from_wave_features(clip.wave_features, clip.exercise,
                                                           clip.expert)
    try:
        fitted = prompt_lib.fit_prompt_ids(summary, tokenizer, prompt_budget(data),
                                           compact=data.compact_prompt)
    except ValueError as e:
        raise ValueError(f"config field 'data.max_prompt_tokens': {e}") from None
    return ModelInputs(waves=waves, frame_mask=frame_mask,
                       prompt_ids=np.asarray(fitted.ids, np.int32), summary=summary,
                       measurement=measurement, shortened=fitted.shortened)


def prompt_budget(data: DataSpec) -> int:
    """Most prompt tokens a clip may use: `data.max_prompt_tokens`, and one token fewer than
    the largest bucket (room for at least the closing <|end|> of a target)."""
    return min(data.max_prompt_tokens, max(data.buckets) - 1)


def shortened_note(inputs: ModelInputs, source: str, data: DataSpec) -> str:
    """The one line saying a clip's prompt was shortened to fit the budget."""
    return (f"note: prompts longer than {prompt_budget(data)} tokens are shortened to fit "
            f"data.max_prompt_tokens / data.buckets (first: {source}, {inputs.shortened})")
