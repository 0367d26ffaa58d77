"""Tests of coaching text: reading facts out of it, the reference composer, and grounding."""

import itertools
import json
import re

import numpy as np
import pytest

from wavepose_jax.data import faults
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.schema import EXERCISES


def _norm(text):
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def test_phrase_lookup_both_ways():
    for fid, fault in faults.FAULTS.items():
        assert text_lib.fault_from_phrase(faults.phrase_for(fid)) == fid
        spelled = "  " + fault.phrase.upper().replace(" ", "-") + "!"
        assert text_lib.fault_from_phrase(spelled) == fid
    assert text_lib.fault_from_phrase("good depth") is None
    with pytest.raises(KeyError):
        faults.phrase_for("bad_knees")


def test_faults_from_text_is_robust_and_exercise_filtered():
    text = "Watch the SHALLOW-DEPTH, and the rushed   descent!"
    assert text_lib.faults_from_text(text) == ["shallow_depth", "fast_eccentric"]
    assert text_lib.faults_from_text(text, "pushup") == ["fast_eccentric"]
    assert text_lib.faults_from_text("Great depth and full lockout.") == []


def test_reps_from_text():
    assert text_lib.reps_from_text("You did 8 reps at 2.5 s per rep.") == 8
    assert text_lib.reps_from_text("Twelve reps, nice.") == 12
    assert text_lib.reps_from_text("1 rep of squats") == 1
    assert text_lib.reps_from_text("About 2.5 seconds per rep.") is None
    assert text_lib.reps_from_text("no count here") is None


@pytest.mark.parametrize("exercise", EXERCISES)
def test_compose_feedback_round_trip_every_fault_subset(exercise):
    ids = [f.id for f in faults.faults_for(exercise)]
    all_phrases = [_norm(f.phrase) for f in faults.FAULTS.values()]
    rng = np.random.default_rng(0)
    texts = set()
    for k in range(len(ids) + 1):
        for subset in itertools.combinations(ids, k):
            for _ in range(40):
                reps = int(rng.integers(1, 16))
                tempo = float(rng.uniform(0.8, 6.0))
                text = text_lib.compose_feedback(exercise, reps, list(subset)[::-1], tempo, rng)
                texts.add(text)
                assert text_lib.faults_from_text(text) == list(subset), text
                assert text_lib.faults_from_text(text, exercise) == list(subset), text
                assert text_lib.reps_from_text(text) == reps, text
                assert f"{reps} rep" in text
                assert f"{tempo:.1f}" in text
                assert text_lib.MIN_WORDS <= len(text.split()) <= text_lib.MAX_WORDS, text
                assert 1 <= len(re.findall(r"[.!?](?:\s|$)", text)) <= 4, text
                for phrase in all_phrases:
                    assert " no" + phrase not in _norm(text)
    assert len(texts) > 300  # the phrasing varies


def test_compose_feedback_rejects_foreign_faults():
    with pytest.raises(ValueError, match="pushup_hip_sag"):
        text_lib.compose_feedback("squat", 5, ["pushup_hip_sag"], 2.0, np.random.default_rng(0))


def test_rep_list_names_the_shorter_side():
    assert text_lib.rep_list([True, True, True]) == ""
    assert text_lib.rep_list([False, True, False, False]) == " on rep 2"
    assert text_lib.rep_list([False, True, True, False, False]) == " on reps 2 and 3"
    assert text_lib.rep_list([True, True, False, True, True]) == " on every rep but rep 3"
    assert text_lib.rep_list([True, False] * 3 + [True]) == " on every rep but reps 2, 4 and 6"


@pytest.mark.parametrize("exercise", EXERCISES)
def test_compose_feedback_says_which_reps_and_reads_back(exercise):
    per_rep = [f.id for f in faults.faults_for(exercise) if f.id in faults.PER_REP_FAULTS]
    rng = np.random.default_rng(1)
    with_lists = 0
    for _ in range(150):
        n = int(rng.integers(1, 16))
        clip = [f for f in faults.faults_for(exercise) if rng.random() < 0.4]
        clip = [f.id for f in clip if n >= 3 or f.id != "uneven_tempo"]
        hit = {f: rng.random(n) < rng.uniform(0.5, 1.0) for f in clip if f in per_rep}
        for f, mask in hit.items():
            mask[int(rng.integers(n))] = True  # a clip fault hits at least one rep
        minority = [f for f in per_rep if f not in clip]
        rep_faults = [[f for f in per_rep if (f in hit and hit[f][i]) or
                       (f in minority and rng.random() < 0.1)] for i in range(n)]
        text = text_lib.compose_feedback(exercise, n, clip[::-1], 2.0, rng, rep_faults=rep_faults)
        with_lists += " on rep" in text or " on every rep but" in text
        assert text_lib.faults_from_text(text) == clip, text
        assert text_lib.reps_from_text(text) == n, text
        assert text_lib.MIN_WORDS <= len(text.split()) <= text_lib.MAX_WORDS, text
        named = text_lib.rep_faults_from_text(text, n, exercise)
        assert len(named) == n
        for said, truth in zip(named, rep_faults):
            # Per rep the text names exactly the clip's faults that rep showed.
            assert set(said) & faults.PER_REP_FAULTS == set(truth) & set(clip), (text, rep_faults)
            assert ("uneven_tempo" in said) == ("uneven_tempo" in clip)
    assert with_lists > 30
    with pytest.raises(ValueError, match="3 entries for 4 reps"):
        text_lib.compose_feedback(exercise, 4, [], 2.0, rng, rep_faults=[[], [], []])


def test_rep_faults_from_text_reads_model_like_text():
    text = ("I counted 5 reps. Watch for shallow depth on reps 2 and 4, incomplete lockout on "
            "every rep but rep 1 and rushed descent. Also rep 9 was odd.")
    assert text_lib.rep_faults_from_text(text, 5, "squat") == [
        ["fast_eccentric"], ["shallow_depth", "incomplete_lockout", "fast_eccentric"],
        ["incomplete_lockout", "fast_eccentric"],
        ["shallow_depth", "incomplete_lockout", "fast_eccentric"],
        ["incomplete_lockout", "fast_eccentric"]]
    assert text_lib.rep_faults_from_text("shallow depth on reps 7 and 8", 3) == [[], [], []]
    assert text_lib.rep_faults_from_text("Nice set.", 2) == [[], []]


def test_tempo_from_text_reads_every_composed_phrasing():
    rng = np.random.default_rng(0)
    for i in range(120):
        tempo = float(rng.uniform(0.8, 5.0))
        text = text_lib.compose_feedback(EXERCISES[i % 4], int(rng.integers(1, 9)), [], tempo,
                                         rng)
        assert text_lib.tempo_from_text(text) == pytest.approx(round(tempo, 1)), text
    assert text_lib.tempo_from_text("8 reps, 2.1 s each, steady.") == 2.1
    assert text_lib.tempo_from_text("each taking about 3 seconds") == 3.0
    assert text_lib.tempo_from_text("Your tempo averaged 1.5 s per rep.") == 1.5
    assert text_lib.tempo_from_text("Pause 2 seconds at the bottom. 8 reps.") is None
    assert text_lib.tempo_from_text("Good set of 5 reps.") is None


def test_without_rep_lists_keeps_every_fault_and_drops_only_the_lists():
    text = ("You completed 5 reps of squats at about 2.1 seconds per rep. Your form showed "
            "shallow depth on reps 3 and 4, incomplete lockout on every rep but rep 2 and "
            "rushed descent. Stand all the way up.")
    out = text_lib.without_rep_lists(text)
    assert out == ("You completed 5 reps of squats at about 2.1 seconds per rep. Your form showed "
                   "shallow depth, incomplete lockout and rushed descent. Stand all the way up.")
    assert text_lib.faults_from_text(out) == text_lib.faults_from_text(text)
    assert text_lib.reps_from_text(out) == 5 and text_lib.tempo_from_text(out) == 2.1
    assert text_lib.without_rep_lists(out) == out


# A squat set as measured: 5 reps of 2.14 s; shallow depth on reps 3 and 4 (not a set fault),
# rushed descent on every rep, no rep short of lockout.
MEASURED = dict(exercise="squat", reps=5, tempo_sec=2.14,
                fault_reps={"shallow_depth": (3, 4), "incomplete_lockout": (),
                            "fast_eccentric": (1, 2, 3, 4, 5)})


def _ground(text):
    return text_lib.ground_feedback(text, **MEASURED)


@pytest.mark.parametrize("rule, said, grounded", [
    ("rep_count", "You completed 3 reps of squats.", "You completed 5 reps of squats."),
    ("rep_count", "I counted eight good reps.", "I counted 5 good reps."),
    ("tempo", "Nice effort; your tempo averaged 2.9 s per rep.",
     "Nice effort; your tempo averaged 2.1 s per rep."),
    ("tempo", "5 reps, each taking around 3 seconds.", "5 reps, each taking around 2.1 seconds."),
    ("fault_reps", "Watch for shallow depth on reps 1 and 2.", "Watch for shallow depth on reps 3 "
     "and 4."),
    ("fault_reps", "Watch for shallow depth.", "Watch for shallow depth on reps 3 and 4."),
    ("fault_reps", "I noticed rushed descent on every rep but rep 2.", "I noticed rushed descent."),
    ("fault_reps", "Watch for uneven tempo on rep 2.", "Watch for uneven tempo."),
    ("fault_reps", "Work on the incomplete lockout on rep 4.", "Work on the incomplete lockout."),
    ("unverified", "Do 3 sets next time.", ""),
    ("unverified", "Your knees bent to 95 degrees.", ""),
])
def test_each_grounding_rule_sets_the_fact_it_owns(rule, said, grounded):
    out = _ground(said)
    assert out.text == grounded
    assert [e.rule for e in out.edits] == [rule]
    assert rule in text_lib.GROUNDING_RULES
    edit = out.edits[0]
    assert edit.said in said and edit.written in grounded and edit.said != edit.written


def test_grounding_a_whole_text_keeps_the_faults_and_words_of_the_model():
    said = ("You moved through 3 reps of squats at roughly 2.9 seconds per rep. Your form "
            "showed shallow depth on reps 1 and 2, rushed descent on every rep but rep 3 and "
            "uneven tempo. Take about two seconds on the way down. Film 2 sets.")
    out = _ground(said)
    assert out.text == ("You moved through 5 reps of squats at roughly 2.1 seconds per rep. Your "
                        "form showed shallow depth on reps 3 and 4, rushed descent and uneven "
                        "tempo. Take about two seconds on the way down.")
    assert text_lib.faults_from_text(out.text) == text_lib.faults_from_text(said)
    assert [e.rule for e in out.edits] == ["rep_count", "tempo", "fault_reps", "fault_reps",
                                           "unverified"]
    again = _ground(out.text)
    assert again.text == out.text and again.edits == ()
    # Sentence by sentence: the complete sentences of a partial text ground to a prefix.
    first = " ".join(text_lib.sentences(said)[:2])
    assert out.text.startswith(_ground(first).text)


def test_grounding_agrees_with_every_generated_reference_text():
    """A reference text states the measured facts already: grounding changes nothing."""
    from wavepose_jax.data import synthetic  # pylint: disable=import-outside-toplevel
    from wavepose_jax.data.clip import clip_from_dict  # pylint: disable=import-outside-toplevel
    from wavepose_jax.data.measure import measure  # pylint: disable=import-outside-toplevel

    for seed in range(12):
        raw = synthetic.generate_clip(seed, EXERCISES[seed % 4], keypoints=False)
        clip = clip_from_dict(json.loads(json.dumps(raw)), f"clip-{seed}.json")
        out = measure(clip).ground(clip.language)
        assert out.text == clip.language and out.edits == (), (clip.language, out.edits)
