"""Tests of the physics summary and the Phi-3 chat prompt built from it."""

import dataclasses
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from wavepose_jax import prompt
from wavepose_jax.data import faults
from wavepose_jax.data.features import WaveFeatures
from wavepose_jax.prompt import PhysicsSummary, build_messages, build_prompt, prompt_ids

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
PHI3_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] "
    "+ '<|end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' + '\n' }}"
    "{% endif %}"
)
WAVE_FEATURES = {
    "quality": {"grade": "B", "overall": 78.0, "smoothness": 0.81, "control": 0.7,
                "efficiency": 0.6, "consistency": 0.9},
    "energy": {"work_positive": 120.0, "work_negative": -80.0},
    "frequency": {"dominant_hz": 0.5, "spectral_entropy": 0.3},
    "harmonic": {"oscillation_count": 2, "is_harmonic": True},
    "waves": [{"type": "eccentric", "duration_sec": 1.0, "mean_velocity": -0.4, "smoothness": 0.8},
              {"type": "concentric", "duration_sec": 0.8, "mean_velocity": 0.5, "smoothness": 0.9},
              {"type": "eccentric", "duration_sec": 1.2, "mean_velocity": -0.3, "smoothness": 0.7},
              {"type": "concentric", "duration_sec": 1.0, "mean_velocity": 0.4, "smoothness": 0.8}],
    "wave_count": 4,
}
LANGUAGE = ("You completed two squats but did not reach depth on most of them. "
            "Slow down the descent and sit lower.")
CLIP = {"exercise": "squat", "expert": False, "wave_features": WAVE_FEATURES,
        "LANGUAGE": LANGUAGE, "faults": ["shallow_depth", "fast_eccentric"]}
_read = WaveFeatures.from_json  # a file's `wave_features` object, as a clip holds it


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"[UNK]": 0}
    for word in "squat reps grade B 5 Exercise: Reps: Feedback:".split():
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token=SPECIALS[0])
    hf.chat_template = PHI3_TEMPLATE
    return hf


def test_summary_from_full_wave_features():
    s = PhysicsSummary.from_wave_features(_read(WAVE_FEATURES), "Squats", expert=True)
    assert (s.exercise, s.reps, s.grade, s.expert) == ("squat", 2, "B", True)
    assert (s.overall, s.smoothness, s.control, s.consistency) == (78.0, 0.81, 0.7, 0.9)
    assert s.phases == (("eccentric", pytest.approx(1.1)), ("concentric", pytest.approx(0.9)))
    assert s.tempo_sec == pytest.approx(4.0 / 2)  # total wave time / reps
    assert s.dominant_hz == 0.5
    d = s.to_dict()
    assert json.loads(json.dumps(d))["phases"][0] == {"type": "eccentric",
                                                      "duration_sec": pytest.approx(1.1)}


@pytest.mark.parametrize("wave_features", [
    None,
    {},
    {"quality": "n/a", "harmonic": {"oscillation_count": "five"}, "waves": [1, {"type": 3}]},
    {"quality": {"overall": float("nan"), "grade": None}, "frequency": {"dominant_hz": 0}},
])
def test_summary_from_partial_wave_features_is_unknown(wave_features):
    s = PhysicsSummary.from_wave_features(
        None if wave_features is None else _read(wave_features), "deadlift")
    assert s.reps is None and s.grade == "unknown" and s.overall is None
    assert s.tempo_sec is None and s.phases == () and s.expert is None
    text = s.to_text()
    assert "Reps: unknown" in text and "deadlift" in text
    assert "unknown" in s.to_text(compact=True)


def test_summary_tempo_falls_back_to_frequency():
    s = PhysicsSummary.from_wave_features(
        _read({"frequency": {"dominant_hz": 0.25}, "quality": {"grade": "A"}}), "push-up")
    assert (s.exercise, s.grade, s.reps) == ("pushup", "A", None)
    assert s.tempo_sec == pytest.approx(4.0)
    assert "Tempo: 4 s per rep" in s.to_text()


def test_messages_hold_the_summary():
    s = PhysicsSummary.from_wave_features(_read(WAVE_FEATURES), "squat", expert=False)
    messages = build_messages(s)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == prompt.SYSTEM_PROMPT
    user = messages[1]["content"]
    for needle in ("squat", "Reps: 2", "grade B", "rep count (2)", "eccentric 1.10 s",
                   "non-expert"):
        assert needle in user
    compact = build_messages(s, compact=True)[1]["content"]
    assert "squat" in compact and "reps 2" in compact and "grade B" in compact
    assert len(compact) < len(user) // 3


def test_prompt_never_contains_ground_truth(tokenizer):
    summary = PhysicsSummary.from_wave_features(_read(CLIP["wave_features"]), CLIP["exercise"],
                                                expert=CLIP["expert"])
    for compact in (False, True):
        text = build_prompt(summary, tokenizer, compact=compact)
        assert "squat" in text
        assert LANGUAGE not in text
        for sentence in LANGUAGE.split(". "):
            assert sentence.strip(". ") not in text
        for fault_id in CLIP["faults"]:
            assert fault_id not in text
            assert faults.phrase_for(fault_id).lower() not in text.lower()


def test_prompt_renders_phi3_chat(tokenizer):
    summary = PhysicsSummary.from_wave_features(_read(WAVE_FEATURES), "squat")
    text = build_prompt(summary, tokenizer)
    assert text.startswith("<|system|>\n" + prompt.SYSTEM_PROMPT + "<|end|>\n<|user|>\n")
    assert text.endswith("<|end|>\n<|assistant|>\n")
    ids = prompt_ids(summary, tokenizer)
    special = dict(zip(SPECIALS, tokenizer.convert_tokens_to_ids(SPECIALS)))
    assert ids[0] == special["<|system|>"] and ids[-1] == special["<|assistant|>"]
    assert ids.count(special["<|end|>"]) == 2 and ids.count(special["<|user|>"]) == 1
    assert len(prompt_ids(summary, tokenizer, compact=True)) < len(ids)


def test_tokenizer_without_chat_template_rejected(tokenizer):
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    summary = PhysicsSummary.from_wave_features(_read({}), "squat")
    with pytest.raises(ValueError, match="chat_template"):
        build_prompt(summary, bare)


def test_summary_tempo_is_the_rep_duration_the_feedback_states():
    """Rest between reps is not part of a rep: the summary's tempo matches the text's."""
    import re

    from wavepose_jax.data.synthetic import generate_clip

    for seed, exercise in enumerate(["squat", "pushup", "deadlift", "press"] * 2):
        clip = generate_clip(seed, exercise, keypoints=False, max_reps=6)
        summary = PhysicsSummary.from_wave_features(_read(clip["wave_features"]), exercise)
        stated = float(re.search(r"(\d+(?:\.\d+)?) ?s(?:econds)?\b", clip["LANGUAGE"]).group(1))
        assert summary.tempo_sec == pytest.approx(stated, abs=0.35), clip["LANGUAGE"]


# ------------------------------------------------------------------------------------------------
# The prompt's length is bounded by design


@pytest.fixture(scope="module")
def demo_tokenizer():
    from wavepose_jax import hf
    from wavepose_jax.configs import tiny

    return hf.load_tokenizer(tiny.TINY_BASE)


def test_every_summary_of_the_wave_analysis_fits_the_base_budget(demo_tokenizer):
    """All exercises, all four phases (the analysis's wave types), the widest numbers, the
    longest grade and rep count: the full prompt fits configs/base.py's budget with the demo
    tokenizer (measured worst case 430 tokens), so no clip is ever shortened or refused."""
    import itertools

    from wavepose_jax.configs import base
    from wavepose_jax.data.schema import EXERCISES

    budget = base.get_config().data.max_prompt_tokens
    widest = (-1.23e-05, 123.0, 0.000123)  # 9, 3 and 8 characters at 3 significant digits
    phases = tuple((kind, 999.99) for kind in ("descent", "bottom", "ascent", "lockout"))
    longest = 0
    for exercise, expert, grade, number, reps in itertools.product(
            EXERCISES, (None, True, False), ("A", "unknown"), widest, (None, prompt.MAX_REPS)):
        summary = PhysicsSummary(exercise, reps, grade, number, number, number, number, number,
                                 phases, number, expert)
        longest = max(longest, len(prompt_ids(summary, demo_tokenizer)))
    assert 380 < longest <= budget, longest


def test_long_summaries_are_shortened_never_refused(demo_tokenizer, tmp_path, capsys):
    """A file's own wave_features may carry many phases and a long grade: the prompt is cut to
    the budget (phases first, then the compact form), the clip is kept, and it is said once."""
    from wavepose_jax.configs import base
    from wavepose_jax.data.clip import clip_from_dict
    from wavepose_jax.inputs import model_inputs, shortened_note
    from wavepose_jax.spec import RunSpec

    waves = [{"type": f"phase number {i}", "duration_sec": 1.0 + i} for i in range(30)]
    features = {**WAVE_FEATURES, "waves": waves, "quality": {"grade": "B" * 40}}
    summary = PhysicsSummary.from_wave_features(_read(features), "squat")
    assert summary.grade == "B" * prompt.MAX_GRADE_CHARS
    full = len(prompt_ids(summary, demo_tokenizer))
    fitted = prompt.fit_prompt_ids(summary, demo_tokenizer, 400)
    assert full > 400 >= len(fitted.ids) and fitted.shortened.endswith("of 30 phases dropped")
    assert demo_tokenizer.decode(fitted.ids).endswith("<|end|>\n<|assistant|>\n")
    compact = prompt.fit_prompt_ids(summary, demo_tokenizer, 60)
    assert compact.shortened == "compact form" and len(compact.ids) <= 60
    with pytest.raises(ValueError, match="below the shortest prompt"):
        prompt.fit_prompt_ids(summary, demo_tokenizer, 10)

    data = RunSpec.from_config(base.get_config()).data
    knee = 130.0 + 45.0 * np.cos(2 * np.pi * np.arange(150) / 75.0)  # two squats
    signals = {"knee_angle_trajectory": knee.tolist()}
    clip = clip_from_dict({**signals, "exercise": "squat", "wave_features": features},
                          source="clip.json")
    inputs = model_inputs(clip, demo_tokenizer, data)
    assert len(inputs.prompt_ids) <= data.max_prompt_tokens
    assert inputs.shortened.endswith("of 30 phases dropped")
    assert "(first: clip.json, " in shortened_note(inputs, clip.source, data)
    with pytest.raises(ValueError, match="config field 'data.max_prompt_tokens'"):
        model_inputs(clip, demo_tokenizer, dataclasses.replace(data, max_prompt_tokens=10))


def test_example_clips_fit_both_configs(demo_tokenizer):
    """The ten clips of examples/ are used unshortened by configs/base.py and configs/tiny.py."""
    import glob
    import os

    from wavepose_jax.configs import base, tiny
    from wavepose_jax.data.clip import load_clip
    from wavepose_jax.inputs import model_inputs
    from wavepose_jax.spec import RunSpec

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    paths = sorted(glob.glob(os.path.join(root, "*.json")))
    assert len(paths) == 10
    for data in (RunSpec.from_config(c.get_config()).data for c in (base, tiny)):
        for path in paths:
            clip = load_clip(path)
            summary = PhysicsSummary.from_wave_features(clip.wave_features, clip.exercise,
                                                        clip.expert)
            inputs = model_inputs(clip, demo_tokenizer, data)
            assert inputs.shortened is None
            assert list(inputs.prompt_ids) == prompt_ids(summary, demo_tokenizer,
                                                         data.compact_prompt)
