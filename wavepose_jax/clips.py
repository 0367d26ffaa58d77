"""Clip files from the command line: check them, or write labelled synthetic or benchmark ones.

    wavepose-clips check FILE_OR_DIR...           one summary line per clip, or one error line
    wavepose-clips synthetic --out DIR --n N [--seed S] [--exercises squat,press] [--noise 1.0]
                   [--max_reps 15] [--fps 24,30,60] [--nokeypoints]
    wavepose-clips other --out DIR --n N [--seed S] [--exercises squat,press]
    (python -m wavepose_jax.clips ... is the same)

`check` validates each file as training and inference read it (`data/clip.py`): a good clip
prints `path: video_id=... exercise=... frames=... fps=... channels=7/7 ...`; a bad one prints
`error: path: field 'x': problem` on stderr. Directories are searched for *.json.
`synthetic` writes N clips of `data/synthetic.py` (deterministic per seed), with keypoints,
the 7 signals, wave features, faults and coaching text.
`other` writes N clips of the out-of-distribution benchmark, `data/othergen.py` (an unrelated
generator, deterministic per seed; keypoints and labels only): evaluation data, which training
refuses. `--noise`, `--max_reps`, `--fps` and `--nokeypoints` are for `synthetic` only.

Exit status: 0 every file good (check) or every clip written (synthetic, other); 1 some files
bad, each reported in one line (check); 2 failed: a usage error (one line naming the flag) or
an output directory that cannot be written.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import flags

from wavepose_jax import cli

COMMAND = cli.Command("wavepose-clips", __doc__,
                      positional="check FILE_OR_DIR... | synthetic | other")
_F = COMMAND.flags
flags.DEFINE_string("out", None, "synthetic, other: output directory", flag_values=_F)
flags.DEFINE_integer("n", 100, "synthetic, other: number of clips", lower_bound=1,
                     flag_values=_F)
flags.DEFINE_integer("seed", 0, "synthetic, other: random seed", flag_values=_F)
flags.DEFINE_list("exercises", None, "synthetic, other: exercises to draw from (synthetic) or "
                  "take in turn (other); default: all", flag_values=_F)
flags.DEFINE_float("noise", 1.0, "synthetic: keypoint jitter and confidence-drop level "
                   "(0 = clean)", lower_bound=0.0, flag_values=_F)
flags.DEFINE_integer("max_reps", 15, "synthetic: most reps per clip", lower_bound=1,
                     flag_values=_F)
flags.DEFINE_list("fps", None, "synthetic: frame rates to draw from (default: 24..60)",
                  flag_values=_F)
flags.DEFINE_boolean("keypoints", True, "synthetic: store COCO-17 keypoints in the clips",
                     flag_values=_F)


def check(paths: Sequence[str]) -> int:
    """Prints a summary line per good clip and an error line per bad one; returns the status."""
    from wavepose_jax.data import clip as clip_lib  # pylint: disable=import-outside-toplevel
    from wavepose_jax.files import list_clip_files  # pylint: disable=import-outside-toplevel

    files = []
    for path in paths:
        files += list_clip_files(path) if os.path.isdir(path) else [path]
    bad = 0
    for path in files:
        try:
            print(clip_lib.summary(clip_lib.load_clip(path)), flush=True)
        except Exception as e:  # pylint: disable=broad-except  # one bad file, not the run
            bad += 1
            print(f"error: {clip_lib.clip_error_line(path, e)}", file=sys.stderr, flush=True)
    if bad:
        print(f"{bad} of {len(files)} clip files are bad", file=sys.stderr)
    return cli.EXIT_SKIPPED if bad else cli.EXIT_OK


_SYNTHETIC_ONLY = ("noise", "max_reps", "fps", "keypoints")


def _exercises(args) -> list[str] | None:
    """--exercises as canonical names (None: all), or a usage error naming the flag."""
    # pylint: disable-next=import-outside-toplevel
    from wavepose_jax.data.schema import EXERCISES, canonical_exercise

    if args.exercises is None:
        return None
    names = [canonical_exercise(e) for e in args.exercises]
    bad = [e for e, name in zip(args.exercises, names) if name is None]
    if bad or not names:
        raise cli.UsageError(f"--exercises: unknown {bad or args.exercises}; expected some of "
                             f"{', '.join(EXERCISES)}")
    return names


def synthetic(args) -> int:
    """Writes the synthetic clips the flags ask for."""
    from wavepose_jax.data import synthetic as synthetic_lib  # pylint: disable=import-outside-toplevel

    if not args.out:
        raise cli.UsageError("synthetic: --out is required")
    exercises = _exercises(args)
    options = {}
    if args.fps is not None:
        try:
            options["fps_choices"] = [float(f) for f in args.fps]
        except ValueError:
            raise cli.UsageError(f"--fps: expected numbers, got {args.fps}") from None
        if not options["fps_choices"] or min(options["fps_choices"]) <= 0:
            raise cli.UsageError(f"--fps: expected positive numbers, got {args.fps}")
    synthetic_lib.write_dataset(args.out, n=args.n, seed=args.seed, exercises=exercises,
                                noise=args.noise, max_reps=args.max_reps,
                                keypoints=args.keypoints, **options)
    print(f"wrote {args.n} clips to {args.out}")
    return cli.EXIT_OK


def other(args) -> int:
    """Writes the out-of-distribution benchmark clips (`data/othergen.py`) the flags ask for."""
    from wavepose_jax.data import othergen  # pylint: disable=import-outside-toplevel

    if not args.out:
        raise cli.UsageError("other: --out is required")
    given = [f"--{'' if args[name].value or not args[name].boolean else 'no'}{name}"
             for name in _SYNTHETIC_ONLY if args[name].present]
    if given:
        raise cli.UsageError(f"other: {', '.join(given)} "
                             f"{'applies' if len(given) == 1 else 'apply'} to synthetic clips only")
    othergen.write_dataset(args.out, args.n, args.seed, exercises=_exercises(args))
    print(f"wrote {args.n} benchmark clips to {args.out}")
    return cli.EXIT_OK


def _run(args, positional: list[str]) -> int:
    if not positional:
        raise cli.UsageError("give a subcommand: check FILE_OR_DIR..., synthetic or other "
                             "(see --help)")
    mode, rest = positional[0], positional[1:]
    if mode == "check":
        if not rest:
            raise cli.UsageError("check: give at least one clip file or directory")
        return check(rest)
    if mode == "synthetic":
        if rest:
            raise cli.UsageError(f"synthetic: unexpected arguments {rest}")
        return synthetic(args)
    if mode == "other":
        if rest:
            raise cli.UsageError(f"other: unexpected arguments {rest}")
        return other(args)
    raise cli.UsageError(f"unknown subcommand {mode!r}: expected check, synthetic or other")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see `wavepose_jax.cli`)."""
    return COMMAND.main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
