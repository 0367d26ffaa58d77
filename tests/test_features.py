"""Tests of the typed `WaveFeatures` (data/features.py): JSON in, the same JSON out."""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from wavepose_jax.data import clip as clip_lib
from wavepose_jax.data import faults, features, synthetic
from wavepose_jax.data.features import Harmonic, Quality, Wave, WaveFeatures
from wavepose_jax.data.schema import EXERCISES, SIGNAL_NAMES

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _same_json(a: dict, b: dict) -> bool:
    """Equal, key order included (what a file written from either would hold)."""
    return json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("exercise", EXERCISES)
def test_generated_wave_features_round_trip(seed, exercise):
    written = synthetic.generate_clip(seed, exercise, keypoints=False, max_reps=4)
    wf = written["wave_features"]
    read = WaveFeatures.from_json(wf)
    assert _same_json(read.to_json(), wf)
    assert read.extra == {} and read.quality.extra == {} and all(not w.extra for w in read.waves)
    assert read.harmonic.oscillation_count == len(read.rep_faults) == written["reps"]
    assert read.wave_count == len(read.waves) and isinstance(read.waves[0], Wave)


def test_computed_features_are_typed_and_round_trip():
    t = np.arange(300) / 30.0
    signals = {name: np.zeros_like(t) for name in SIGNAL_NAMES}
    signals["knee_angle_trajectory"] = 130.0 + 45.0 * np.cos(2 * np.pi * t / 2.5)
    wf = faults.wave_features(signals, 30.0, "squat")
    assert isinstance(wf.quality.overall, float) and isinstance(wf.harmonic.is_harmonic, bool)
    assert wf.rep_faults == ((),) * wf.harmonic.oscillation_count
    assert list(wf.to_json())[-1] == "rep_faults"  # after the computed parts, as files hold it
    assert WaveFeatures.from_json(wf.to_json()) == wf
    assert features.compute_wave_features(signals, 30.0, "squat").rep_faults is None
    assert _same_json(WaveFeatures.from_json(wf.to_json()).to_json(), wf.to_json())


def test_example_files_round_trip_and_load_unchanged():
    paths = sorted(glob.glob(os.path.join(EXAMPLES, "*.json")))
    assert len(paths) == 10
    for path in paths:
        with open(path, encoding="utf-8") as f:
            wf = json.load(f)["wave_features"]
        assert _same_json(WaveFeatures.from_json(wf).to_json(), wf)
        assert _same_json(clip_lib.load_clip(path).wave_features.to_json(), wf)


def test_key_order_unknown_keys_and_partial_parts_are_kept():
    given = {"custom": {"note": [1, 2]},
             "frequency": {"spectral_entropy": 0.5, "mystery": None, "dominant_hz": 1},
             "harmonic": {"is_harmonic": False},
             "reps": 4,
             "quality": {"grade": "B"}}
    read = WaveFeatures.from_json(given)
    assert _same_json(read.to_json(), given)
    assert read.frequency.dominant_hz == 1 and read.frequency.band_power is None
    assert read.frequency.extra == {"mystery": None}
    assert read.harmonic == Harmonic(is_harmonic=False) and read.harmonic.oscillation_count is None
    assert read.extra == {"custom": {"note": [1, 2]}, "reps": 4}
    assert read.energy is None and read.waves is None and read.rep_faults is None
    assert WaveFeatures.from_json({}) == WaveFeatures() and WaveFeatures().to_json() == {}


def test_values_of_the_wrong_type_read_as_none_and_are_kept():
    """A validated file never has them (`validate.check_wave_features`); nothing is lost."""
    odd = {"quality": "n/a", "harmonic": {"oscillation_count": "five", "is_harmonic": 1},
           "waves": [1, {"type": 3}], "wave_count": True,
           "energy": {"work_positive": float("nan")}, "rep_faults": [["a"], "b"]}
    read = WaveFeatures.from_json(odd)
    assert read.quality is None and read.waves is None and read.wave_count is None
    assert read.rep_faults is None and read.energy.work_positive is None
    assert read.harmonic.oscillation_count is None and read.harmonic.is_harmonic is None
    assert read.to_json() == odd and list(read.to_json()) == list(odd)
    with pytest.raises(TypeError, match="expects an object"):
        WaveFeatures.from_json([1, 2])


def test_built_features_write_the_schema_order():
    wf = WaveFeatures(wave_count=0, quality=Quality(overall=1.5, grade="F"), waves=(),
                      rep_faults=(("fast_eccentric",), ()), extra={"note": "x"})
    assert _same_json(wf.to_json(), {"quality": {"grade": "F", "overall": 1.5}, "waves": [],
                                     "wave_count": 0, "rep_faults": [["fast_eccentric"], []],
                                     "note": "x"})
    assert WaveFeatures.from_json(wf.to_json()) == wf
    with pytest.raises(AttributeError):
        wf.wave_count = 2  # frozen


def test_the_validation_schema_names_the_typed_fields():
    """data/validate.py checks exactly the parts `WaveFeatures` types."""
    from wavepose_jax.data.validate import WAVE_FEATURES_SCHEMA

    def names(cls):
        return {f.name for f in dataclasses.fields(cls) if "read" in f.metadata}

    assert set(WAVE_FEATURES_SCHEMA) == names(WaveFeatures)
    for key, cls in (("quality", features.Quality), ("energy", features.Energy),
                     ("damping", features.Damping), ("frequency", features.Frequency),
                     ("harmonic", features.Harmonic)):
        assert set(WAVE_FEATURES_SCHEMA[key]) == names(cls), key
    assert set(WAVE_FEATURES_SCHEMA["frequency"]["band_power"]) == names(features.BandPower)
    assert set(WAVE_FEATURES_SCHEMA["waves"][0]) == names(features.Wave)
