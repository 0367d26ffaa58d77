"""Training data: examples, bucketed collation, video-level split, grain loaders, bad files."""

import dataclasses
import json
import os

import numpy as np
import pytest

from wavepose_jax import dataset, tiny
from wavepose_jax.inputs import ModelInputs
from wavepose_jax.configs import tiny as tiny_config
from wavepose_jax.spec import RunSpec

LANGUAGE = "Good set of 4 reps. Squat deeper: your hips stay above the knees."


_TINY = RunSpec.from_config(tiny_config.get_config()).data


def _data(**fields):
    """A data spec of test sizes (the 7 signals only unless asked), `fields` replaced."""
    return dataclasses.replace(_TINY, **{**dict(
        seq_len=96, target_fps=15.0, normalization="physical", max_prompt_tokens=120,
        max_target_tokens=120, buckets=(64, 128, 256), compact_prompt=True, val_fraction=0.25,
        rep_channels=False, fault_channels=False), **fields})


@pytest.fixture(scope="module")
def tokenizer():
    texts = [LANGUAGE, "Coach the lifter. squat reps 4 grade B tempo 2.0s Feedback:",
             "Keep your chest up and drive through the heels."] * 20
    return tiny.build_tokenizer(texts, vocab_size=300)


def squat_clip(video_id: str, reps: int = 4, fps: float = 30.0, period: float = 2.0, **extra):
    """A side-view squat clip: knee angle 175 deg at the top, 95 deg at the bottom."""
    n = int(fps * (reps * period + 1.0))
    t = np.arange(n) / fps
    cycle = np.where((t >= 0.5) & (t < 0.5 + reps * period),
                     0.5 * (1 - np.cos(2 * np.pi * (t - 0.5) / period)), 0.0)  # 0 top, 1 bottom
    knee = 175.0 - 80.0 * cycle
    hip = -0.9 * cycle
    clip = {
        "video_id": video_id, "exercise": "squat", "fps": fps,
        "trajectory": hip.tolist(), "legs_trajectory": (-0.9 - 0.2 * cycle).tolist(),
        "shoulder_trajectory": (1.0 + hip).tolist(), "back_trajectory": (170 - 70 * cycle).tolist(),
        "knee_angle_trajectory": knee.tolist(), "arm_Trajectory": (0.5 + hip).tolist(),
        "core_": np.ones(n).tolist(), "LANGUAGE": LANGUAGE, "faults": ["shallow_depth"],
    }
    clip.update(extra)
    return clip


def _write(directory, name, obj):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_build_example_phase_prompt_and_target(tokenizer, tmp_path):
    from wavepose_jax.data.clip import load_clip

    config = _data()
    clip = load_clip(_write(tmp_path, "a.json", squat_clip("vid-a", reps=3)))
    ex = dataset.build_example(clip, tokenizer, config)
    assert ex.inputs.waves.shape == (96, 7) and ex.inputs.waves.dtype == np.float32
    n_real = int(ex.inputs.frame_mask.sum())
    assert n_real == 96   # 7 s at 30 fps resampled to 15 fps = 106 frames, truncated to 96
    # The prompt carries no ground truth.
    prompt = tokenizer.decode(ex.inputs.prompt_ids)
    assert "deeper" not in prompt and "shallow" not in prompt and "Squat deeper" not in prompt
    assert prompt.rstrip().endswith("<|assistant|>")
    # Target = LANGUAGE ids + <|end|>.
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    expected = tokenizer(LANGUAGE, add_special_tokens=False)["input_ids"] + [end]
    assert ex.target_ids.tolist() == expected
    # Phase: 0 outside reps, rising 0 -> 2 pi inside each rep, pi near the knee-angle minimum.
    phase, inside = ex.phase, ex.phase_mask
    assert inside.any() and not inside[:5].any()
    assert phase.min() >= 0 and phase.max() <= 2 * np.pi + 1e-5
    assert np.all(phase[~inside] == 0)
    frames = np.flatnonzero(inside)
    reps = np.split(frames, np.flatnonzero(np.diff(phase[frames]) < -np.pi) + 1)
    assert len(reps) == 3
    knee = ex.inputs.waves[:, 4]
    for rep in reps[:2]:   # the third is cut by the 96-frame window
        assert np.all(np.diff(phase[rep]) > 0) and phase[rep[0]] < 0.5
        assert 2 * np.pi - phase[rep[-1]] < 0.5
        assert abs(phase[rep[np.argmin(knee[rep])]] - np.pi) < 0.3


def test_rep_channels_follow_the_signals_and_the_example_knows_its_rules(tokenizer, tmp_path):
    from wavepose_jax.data import waves
    from wavepose_jax.data.clip import load_clip

    clip = load_clip(_write(tmp_path, "a.json", squat_clip("vid-a", reps=3,
                                                           rep_faults=[[], [], []])))
    plain = dataset.build_example(clip, tokenizer, _data())
    ex = dataset.build_example(clip, tokenizer, _data(rep_channels=True))
    assert ex.inputs.waves.shape == (96, 7 + len(waves.REP_CHANNELS))
    np.testing.assert_array_equal(ex.inputs.waves[:, :7], plain.inputs.waves)
    assert np.abs(ex.inputs.waves[:, 7:]).max() > 0.5  # the reps are there
    assert _data(rep_channels=True).num_channels == 7 + len(waves.REP_CHANNELS)
    # 95 deg at the bottom, 175 at the top: by the rules no fault, whatever the file's label.
    assert ex.info.rule_faults == () and ex.info.faults == ("shallow_depth",)
    assert ex.info.rep_faults == ((), (), ()) and ex.info.benchmark is None


def test_target_truncated_to_budget_keeps_end(tokenizer, tmp_path):
    from wavepose_jax.data.clip import load_clip

    config = _data(max_target_tokens=6)
    ex = dataset.build_example(load_clip(_write(tmp_path, "a.json", squat_clip("v"))), tokenizer,
                                config)
    assert len(ex.target_ids) == 6
    assert ex.target_ids[-1] == tokenizer.convert_tokens_to_ids("<|end|>")


def _fake_examples(n, prompt_len=5, target_len=3):
    examples = []
    for i in range(n):
        inputs = ModelInputs(
            waves=np.full((8, 7), i, np.float32), frame_mask=np.ones(8, bool),
            prompt_ids=np.arange(10, 10 + prompt_len + i % 3, dtype=np.int32), summary=None,
            measurement=None)
        examples.append(dataset.Example(
            inputs=inputs, phase=np.zeros(8, np.float32), phase_mask=np.zeros(8, bool),
            target_ids=np.full(target_len + i % 2, 7, np.int32),
            info=dataset.ClipInfo(f"{i}.json", f"v{i}", "squat", "text", None, None)))
    return examples


def test_collate_layout_and_buckets():
    config = _data(buckets=(8, 12, 32))
    examples = _fake_examples(3)   # lengths 8, 10, 10
    batch = dataset.collate(examples, config.buckets, pad_id=0, weights=[1, 1, 0])
    assert batch.tokens.shape == (3, 12) and batch.tokens.dtype == np.int32
    assert batch.waves.shape == (3, 8, 7) and batch.frame_mask.dtype == bool
    np.testing.assert_array_equal(batch.prompt_len, [5, 6, 7])
    np.testing.assert_array_equal(batch.token_mask.sum(1), [8, 10, 10])
    np.testing.assert_array_equal(batch.loss_mask.sum(1), [3, 4, 0])   # weight-0 row: none
    row = batch.tokens[1]
    assert row[:6].tolist() == list(range(10, 16)) and row[6:10].tolist() == [7] * 4
    assert row[10:].tolist() == [0, 0]
    assert batch.loss_mask[1, 6:10].all() and not batch.loss_mask[1, :6].any()
    np.testing.assert_array_equal(batch.example_weight, [1, 1, 0])
    # Target slots: the bucket of the longest target (4 -> 8, capped at L = 12), each row's
    # target positions first; the rest point at position 0 (a prompt token, weight 0).
    assert batch.target_pos.shape == (3, 8) and batch.target_pos.dtype == np.int32
    np.testing.assert_array_equal(batch.target_pos[0], [5, 6, 7, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch.target_pos[1], [6, 7, 8, 9, 0, 0, 0, 0])
    assert not batch.target_pos[2].any()
    assert dataset.collate(examples[:1], config.buckets, 0).tokens.shape == (1, 8)
    with pytest.raises(ValueError, match="largest bucket"):
        dataset.collate(_fake_examples(1, prompt_len=40), config.buckets, 0)


def test_split_by_video_id_is_stable_and_disjoint():
    paths = [f"c{i}.json" for i in range(200)]
    videos = [f"video{i // 4}" for i in range(200)]   # 4 clips per video
    train, val = dataset.split_by_video_id(paths, 0.2, seed=1, video_ids=videos)
    assert sorted(train + val) == list(range(200))
    assert not {videos[i] for i in train} & {videos[i] for i in val}
    assert 0.1 < len(val) / 200 < 0.3
    # More files: the old ones keep their side.
    more_videos = videos + [f"new{i}" for i in range(50)]
    train2, val2 = dataset.split_by_video_id(paths + ["x"] * 50, 0.2, seed=1,
                                              video_ids=more_videos)
    assert set(val) == {i for i in val2 if i < 200}
    assert dataset.split_by_video_id(paths, 0.2, seed=2, video_ids=videos)[1] != val
    # Tiny dataset: val is never empty when asked for.
    assert len(dataset.split_by_video_id(["a", "b"], 0.1, 0, video_ids=["a", "b"])[1]) == 1


class _Tok:
    pad_token_id, eos_token_id = 0, 0


def _source(n, **data):
    return dataset.ExampleSource([f"{i}.json" for i in range(n)], _Tok(), _data(**data),
                                 _fake_examples(n))


def _ids(batch):
    return batch.waves[:, 0, 0].astype(int).tolist()


def test_train_loader_shuffles_per_epoch_shards_and_resumes():
    src = _source(12, buckets=(16,))
    it = dataset.make_train_loader(src, batch_size=4, seed=3)
    epoch1 = sum((_ids(next(it)) for _ in range(3)), [])
    epoch2 = sum((_ids(next(it)) for _ in range(3)), [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(12))
    assert epoch1 != epoch2 and epoch1 != list(range(12))
    again = dataset.make_train_loader(src, batch_size=4, seed=3)
    assert _ids(next(again)) == epoch1[:4]
    # Resume from a saved position.
    state = it.get_state()
    expected = [_ids(next(it)) for _ in range(2)]
    resumed = dataset.make_train_loader(src, batch_size=4, seed=3)
    resumed.set_state(state)
    assert [_ids(next(resumed)) for _ in range(2)] == expected
    # Two processes: disjoint halves of each global batch size.
    shards = [dataset.make_train_loader(src, batch_size=4, seed=3, process_index=p,
                                        process_count=2) for p in range(2)]
    seen = [sum((_ids(next(s)) for _ in range(3)), []) for s in shards]
    assert all(len(s) == 6 for s in seen)
    assert sorted(seen[0] + seen[1]) == list(range(12))
    # Every process pads to the largest bucket, so the global batch has one shape.
    src = _source(12, buckets=(16, 24))
    batch = next(dataset.make_train_loader(src, batch_size=4, seed=3, process_index=1,
                                           process_count=2))
    assert batch.tokens.shape == (2, 24)


def test_eval_batches_fixed_order_and_padding():
    src = _source(10, buckets=(16,))
    batches = list(dataset.make_eval_batches(src, batch_size=4))
    assert len(batches) == dataset.num_eval_batches(src, 4) == 3
    assert sum((_ids(b) for b in batches), [])[:10] == list(range(10))
    last = batches[-1]
    np.testing.assert_array_equal(last.example_weight, [1, 1, 0, 0])
    assert not last.loss_mask[2:].any() and last.loss_mask[:2].any()
    assert {b.tokens.shape for b in batches} == {(4, 16)}
    # Two processes: each gets its half of every global batch, padded to the global bucket.
    config = _data(buckets=(8, 10, 16))
    ex = _fake_examples(3)   # token lengths 8, 10, 10
    src = dataset.ExampleSource(["a", "b", "c", "d"], _Tok(), config,
                                [ex[1], ex[2], ex[0], ex[0]])
    halves = [next(dataset.make_eval_batches(src, batch_size=4, process_index=p,
                                             process_count=2)) for p in range(2)]
    assert [_ids(h) for h in halves] == [[1, 2], [0, 0]]
    assert {h.tokens.shape for h in halves} == {(2, 10)}   # process 1 alone would pick 8
    assert {h.target_pos.shape for h in halves} == {(2, 8)}  # and the same target slots


def test_prepare_dataset_skips_bad_files(tokenizer, tmp_path, capsys):
    for i in range(8):
        _write(tmp_path, f"clip{i}.json", squat_clip(f"video{i // 2}", reps=2 + i % 3))
    _write(tmp_path, "broken.json", "{not json")
    _write(tmp_path, "nolang.json", squat_clip("video9", LANGUAGE=None))
    train, val, report = dataset.prepare_dataset(tmp_path, tokenizer, _data(), seed=0)
    err = capsys.readouterr().err
    assert "broken.json: field '<json>'" in err and "nolang.json: field 'LANGUAGE'" in err
    assert "skipped 2 of 10 clip files" in err
    assert len(report.bad) == 2 and report.n_files == 10
    assert len(train) + len(val) == 8 and len(val) > 0
    assert report.n_train_videos + report.n_val_videos == 4
    train_videos = {train[i].info.video_id for i in range(len(train))}
    assert not train_videos & {val[i].info.video_id for i in range(len(val))}
    assert val[0].info.faults == ("shallow_depth",) and val[0].info.reps is not None
    batch = next(dataset.make_train_loader(train, batch_size=4, seed=0))
    assert batch.tokens.shape[1] in (64, 128, 256)
    with pytest.raises(ValueError, match="no usable clip files"):
        dataset.prepare_dataset(tmp_path, tokenizer, _data(), seed=0, max_clips=1)  # broken.json


def test_fault_channels_carry_the_rules_verdicts_on_the_frames_they_read(tokenizer, tmp_path):
    from wavepose_jax.data import faults, waves
    from wavepose_jax.data.clip import load_clip

    # Three reps; the second bottoms out at 130 deg (shallow), the others at 95 deg.
    raw = squat_clip("vid-b", reps=3)
    t = np.arange(len(raw["knee_angle_trajectory"])) / raw["fps"]
    knee = np.asarray(raw["knee_angle_trajectory"])
    second = (t >= 2.5) & (t < 4.5)
    knee[second] = 175.0 - (175.0 - knee[second]) * 45.0 / 80.0
    raw["knee_angle_trajectory"] = knee.tolist()
    clip = load_clip(_write(tmp_path, "b.json", raw))
    analysis = waves.analyze_reps(clip.signals, clip.fps, clip.exercise)
    per_rep = faults.per_rep_faults(analysis)
    assert [("shallow_depth" in ids) for ids in per_rep] == [False, True, False]
    ch = faults.fault_channels(analysis)
    k = list(faults.FAULTS).index("shallow_depth")
    assert ch.shape == (analysis.num_frames, len(faults.FAULT_CHANNELS))
    for rep, ids in zip(analysis.reps, per_rep):
        assert ch[rep.start:rep.end + 1, k].min() == ch[rep.start:rep.end + 1, k].max() == (
            1.0 if "shallow_depth" in ids else 0.0)
    clip_level = ch[:, len(faults.FAULTS):]
    assert {f for f, col in zip(faults.FAULTS, clip_level.T) if col.all()} == set(
        faults.detect_faults(analysis))
    assert "shallow_depth" not in faults.detect_faults(analysis)  # 1 of 3 reps: not the set's
    ex = dataset.build_example(clip, tokenizer, _data(rep_channels=True, fault_channels=True))
    assert ex.inputs.waves.shape == (96, 7 + len(waves.REP_CHANNELS) + len(faults.FAULT_CHANNELS))
    assert _data(fault_channels=True).num_channels == 7 + len(faults.FAULT_CHANNELS)
