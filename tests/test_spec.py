"""A run's settings, typed once at the command line: every field checked, nothing guessed."""

import json

import pytest

from wavepose_jax.configs import base, tiny
from wavepose_jax.data.faults import FAULT_CHANNELS, FAULTS
from wavepose_jax.data.waves import REP_CHANNELS
from wavepose_jax.spec import SAVED_BEFORE, RunSpec


@pytest.mark.parametrize("module", [base, tiny])
def test_a_config_and_its_spec_hold_the_same_settings(module):
    config = module.get_config()
    spec = RunSpec.from_config(config)
    # What a checkpoint stores is the config's own layout, field for field.
    assert spec.to_dict() == json.loads(config.to_json_best_effort())
    assert RunSpec.from_config(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.train.trainable == tuple(config.train.trainable)
    assert spec.data.buckets == tuple(config.data.buckets)


def test_the_model_spec_is_derived_not_configured():
    spec = RunSpec.from_config(tiny.get_config())
    model = spec.model
    assert spec.data.rep_channels and spec.data.fault_channels
    assert model.encoder.num_signals == 7 + len(REP_CHANNELS) + len(FAULT_CHANNELS)
    assert model.bridge.num_faults == len(FAULTS)  # tiny trains the fault head
    assert model.seed == spec.train.seed and model.lora == spec.lora
    plain = spec.replace(train={"fault_loss_weight": 0.0},
                         data={"rep_channels": False, "fault_channels": False})
    assert plain.model.bridge.num_faults == 0 and plain.model.encoder.num_signals == 7


@pytest.mark.parametrize("change, message", [
    (lambda d: d["train"].update(stepz=3), "config field 'train.stepz': unknown field"),
    (lambda d: d["train"].pop("steps"), "config field 'train.steps': missing"),
    (lambda d: d["train"].update(steps="many"), "config field 'train.steps': expected int"),
    (lambda d: d["llm"].update(remat=1), "config field 'llm.remat': expected bool"),
    (lambda d: d["data"].update(buckets=128), "config field 'data.buckets': expected a list"),
    (lambda d: d.update(extra={}), "config field 'extra': unknown group"),
    (lambda d: d.pop("eval"), "config field 'eval': missing group"),
    (lambda d: d["bridge"].update(d_model=8), "config field 'bridge.d_model': 8 differs"),
])
def test_every_mistake_is_one_line_naming_the_field(change, message):
    tree = RunSpec.from_config(base.get_config()).to_dict()
    change(tree)
    with pytest.raises(ValueError, match=message) as e:
        RunSpec.from_config(tree)
    assert "\n" not in str(e.value)


def test_a_checkpoint_from_before_a_field_existed_reads_as_it_meant():
    tree = RunSpec.from_config(tiny.get_config()).to_dict()
    del tree["llm"]["scan_layers"], tree["data"]["fault_channels"]
    spec = RunSpec.from_config(tree)
    assert spec.llm.scan_layers is SAVED_BEFORE["llm.scan_layers"] is False
    assert spec.data.fault_channels is False
    # Only fields listed there may be missing.
    del tree["train"]["seed"]
    with pytest.raises(ValueError, match="'train.seed': missing"):
        RunSpec.from_config(tree)


def test_specs_are_frozen_and_replaced_field_by_field():
    spec = RunSpec.from_config(tiny.get_config())
    with pytest.raises(AttributeError):
        spec.train.steps = 3  # type: ignore[misc]
    shorter = spec.replace(train={"steps": 3})
    assert shorter.train.steps == 3 and spec.train.steps != 3
    assert shorter.data is spec.data
