"""What a person reads about a clip: the model's text with its facts grounded, and its checks.

    fb = feedback(model_text, measurement)
    fb.text        # the feedback: the model's words, the measured rep count, tempo and reps
    fb.edits       # what grounding changed (`data/text.py`, GROUNDING_RULES)
    fb.checks      # the feedback against the measurement (`checks.py`)

Every path that writes coaching text goes through `feedback`: `infer` (text, `--json`,
`--report`), `evaluate` and the samples `train.py` logs. The model chooses which faults to name
and how to say it; the numbers come from the measurement. A clip with nothing to coach never
gets here (`data/measure.NothingToCoach`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from wavepose_jax import checks as checks_lib
from wavepose_jax.data import text as text_lib
from wavepose_jax.data.measure import Measurement


# What is shown for a feedback that grounding left empty (the model wrote nothing, or only
# sentences stating numbers the measurement does not confirm): never a blank.
EMPTY = "(no feedback: the model wrote nothing the measurement confirms)"


@dataclasses.dataclass(frozen=True)
class Feedback:
    """The feedback of one clip."""

    text: str                          # what the tool says: grounded
    model_text: str                    # what the model wrote
    edits: tuple[text_lib.Edit, ...]   # how one became the other
    faults: list[str]                  # the faults the feedback names (the model's choice)
    checks: checks_lib.Checks          # `text` against the measurement

    @property
    def shown(self) -> str:
        """The text to show a person: the feedback, or `EMPTY` when there is none."""
        return self.text or EMPTY

    def to_json(self) -> dict[str, Any]:
        """feedback, model_text, faults, grounding (the edits) and checks, JSON-ready."""
        return {"feedback": self.text, "model_text": self.model_text, "faults": self.faults,
                "grounding": [e.to_json() for e in self.edits],
                "checks": self.checks.to_json()}


def feedback(model_text: str, measurement: Measurement) -> Feedback:
    """The grounded feedback of a generated text and its checks."""
    grounded = measurement.ground(model_text)
    return Feedback(text=grounded.text, model_text=model_text, edits=grounded.edits,
                    faults=text_lib.faults_from_text(grounded.text, measurement.exercise),
                    checks=checks_lib.check_feedback(grounded.text, measurement))
