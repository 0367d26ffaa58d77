"""Names shared by every part of the data half: signal channels, exercises, the error type."""

from __future__ import annotations

# The 7 body-region signals, in model-input order, spelled exactly as existing clip files do.
SIGNAL_NAMES: tuple[str, ...] = (
    "trajectory",             # hip-midpoint vertical position (torso units, up positive)
    "legs_trajectory",        # knee-midpoint vertical position
    "shoulder_trajectory",    # shoulder-midpoint vertical position
    "back_trajectory",        # hip angle shoulder-hip-knee (degrees)
    "knee_angle_trajectory",  # knee angle hip-knee-ankle (degrees)
    "arm_Trajectory",         # wrist-midpoint vertical position
    "core_",                  # shoulder-midpoint minus hip-midpoint vertical
)
NUM_SIGNALS = len(SIGNAL_NAMES)
ANGLE_SIGNALS: tuple[str, ...] = ("back_trajectory", "knee_angle_trajectory")

# Canonical exercise ids.
EXERCISES: tuple[str, ...] = ("squat", "pushup", "deadlift", "press")

# Spellings seen in the wild -> canonical id.
EXERCISE_ALIASES: dict[str, str] = {
    "squat": "squat", "squats": "squat", "back_squat": "squat", "air_squat": "squat",
    "pushup": "pushup", "push_up": "pushup", "push-up": "pushup", "push up": "pushup",
    "pushups": "pushup", "push-ups": "pushup", "push_ups": "pushup",
    "deadlift": "deadlift", "deadlifts": "deadlift", "dead_lift": "deadlift",
    "press": "press", "overhead_press": "press", "overhead press": "press",
    "overhead-press": "press", "ohp": "press", "shoulder_press": "press",
    "military_press": "press",
}


class ClipError(ValueError):
    """A clip file is unusable. The message names the file and the field, in one line."""

    def __init__(self, source: str, field: str, problem: str):
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.source}: field '{field}': {problem}")


def canonical_exercise(name: str) -> str | None:
    """Canonical exercise id for a spelling, or None if unknown."""
    return EXERCISE_ALIASES.get(str(name).strip().lower())
