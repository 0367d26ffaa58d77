"""The command-line convention every wavepose command follows.

* Flags are absl flags (`--name=value`, `--name value`, `--noflag` for booleans), defined on a
  `FlagValues` of the command's own, so commands can run one after another in one process.
* `--help` (or `-h`) prints the command's usage and flags and exits 0, whatever else is given.
* `--verbosity` sets absl logging: -2 errors only, -1 warnings (the default), 0 info, 1 debug.
  JAX and Orbax log through it.
* A user mistake (a bad flag, a missing file, a broken clip or checkpoint) is one line on
  stderr, `error: <file or flag>: <what is wrong>`, never a traceback; with `--verbosity=1`
  an unexpected error also prints its traceback.

Exit status, the same for every command:

    0  everything was done
    1  done, but some input files were bad and skipped (each reported in one line)
    2  failed: a usage error, or an error that stopped the run
    130 interrupted (Ctrl-C) where the command does not handle it itself
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags, logging

EXIT_OK, EXIT_SKIPPED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130
_HELP = ("--help", "-h", "--helpfull", "--helpshort", "-help")
PACKAGED_CONFIGS = ("tiny", "base")  # wavepose_jax/configs/<name>.py, named by `--config NAME`


class UsageError(ValueError):
    """A bad combination of flags, reported as `error: <message>` with exit status 2."""


def one_line(error: BaseException) -> str:
    """The message of an error (unwrapping exceptions wrapped as arguments) on one line."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    text = " ".join(str(text).split())
    return text or type(error).__name__


def fail(message: str) -> int:
    """Prints `error: <message>` on stderr; returns EXIT_FAILED."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


class Command:
    """One command line: its flags, its help text, and how it runs.

    Usage:

        command = cli.Command("wavepose-infer", __doc__)
        flags.DEFINE_string("input", None, "clip file or directory", flag_values=command.flags)

        def run(values, args) -> int: ...

        def main(argv=None) -> int:
            return command.main(run, argv)
    """

    def __init__(self, name: str, doc: str, *, positional: str | None = None):
        """name: the program name in the usage line; doc: the module docstring (first
        paragraph = summary, the rest = details); positional: the name of positional arguments
        (e.g. "FILE...") when the command takes them, else none are accepted."""
        self.name = name
        self.doc = doc.strip()
        self.positional = positional
        self.flags = flags.FlagValues()
        flags.DEFINE_integer("verbosity", -1, "logging: -2 errors only, -1 warnings, 0 info, "
                             "1 debug (also prints the traceback of an unexpected error)",
                             flag_values=self.flags, short_name="v")

    # -- help ------------------------------------------------------------------------------------

    def help_text(self) -> str:
        """Usage line, description and every flag with its default."""
        lines = [self.doc, "", "flags:"]
        for flag in sorted(self._own_flags(), key=lambda f: f.name):
            name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            lines += textwrap.wrap(f"{name}: {flag.help}{default}", width=96,
                                   initial_indent="  ", subsequent_indent="      ")
        return "\n".join(lines)

    def _own_flags(self) -> list:
        seen, out = set(), []
        for module, module_flags in self.flags.flags_by_module_dict().items():
            if module.startswith("absl."):
                continue
            for flag in module_flags:
                if flag.name not in seen:
                    seen.add(flag.name)
                    out.append(flag)
        return out

    # -- running ---------------------------------------------------------------------------------

    def parse(self, argv: Sequence[str]) -> list[str]:
        """Parses flags (argv[0] is the program); returns the positional arguments.

        Raises:
          UsageError: an unknown or malformed flag, a missing required flag, or positional
            arguments the command does not take.
        """
        self.flags.unparse_flags()
        try:
            rest = self.flags(list(argv))[1:]
        except (AttributeError, KeyError, TypeError) as e:  # a config override (--config.a.b=)
            raise UsageError(f"command line: no such config field or bad value: {one_line(e)} "
                             "(see --help)") from None
        except flags.Error as e:
            message = one_line(e)
            required = re.search(r"Flag --(\w+) must have a value other than None", message)
            if required:
                message = f"--{required.group(1)} is required"
            raise UsageError(f"command line: {message} (see --help)") from None
        if rest and not self.positional:
            raise UsageError(f"command line: unexpected arguments {rest} (see --help)")
        return rest

    def main(self, run: Callable[[Any, list[str]], int], argv: Sequence[str] | None = None,
             *, user_errors: tuple[type[BaseException], ...] = ()) -> int:
        """Parses `argv` (default sys.argv), runs `run(flag_values, positional)`, and turns
        errors into the convention of the module docstring. Returns the exit status."""
        argv = list(sys.argv if argv is None else [self.name, *argv])
        if any(arg in _HELP for arg in argv[1:]):
            try:
                print(self.help_text(), flush=True)
            except BrokenPipeError:  # `--help | head`
                sys.stderr.close()
            return EXIT_OK
        try:
            positional = self.parse(argv)
        except UsageError as e:
            return fail(str(e))
        set_verbosity(self.flags.verbosity)
        _quiet_background_errors(self.flags.verbosity)
        try:
            return int(run(self.flags, positional))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        except (ValueError, OSError, *user_errors) as e:
            if self.flags.verbosity >= 1:
                traceback.print_exc()
            return fail(one_line(e))
        except Exception as e:  # pylint: disable=broad-except
            if self.flags.verbosity >= 1:
                traceback.print_exc()
                return fail(f"{type(e).__name__}: {one_line(e)}")
            return fail(f"{type(e).__name__}: {one_line(e)} (--verbosity=1 shows the traceback)")


def define_config_flag(flag_values: flags.FlagValues) -> None:
    """The `--config` flag of a command that runs a config file (train, training.aot); pair it
    with `config_argv`, which turns a packaged config's name into its file."""
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    config_flags.DEFINE_config_file("config", None, "config file (configs/*.py), or the name of "
                                    "a config of the package: " + ", ".join(PACKAGED_CONFIGS),
                                    flag_values=flag_values, lock_config=True)


def config_file(args: Any, example: str) -> str:
    """The file named by the `--config` flag of `define_config_flag`, checked: UsageError
    when the flag is missing (`example`: a packaged config to suggest) or names no file."""
    from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

    path = config_flags.get_config_filename(args["config"]) if args["config"].present else None
    if not path:
        raise UsageError(f"--config is required (e.g. --config configs/{example}.py, or "
                         f"--config {example})")
    if not os.path.isfile(path):
        raise UsageError(f"--config: {path}: no such file")
    return path


def config_argv(argv: Sequence[str]) -> list[str]:
    """`--config=NAME` / `--config NAME` for a config of the package (`PACKAGED_CONFIGS`,
    unless a file of that name exists here) -> the path of its file, with any `:override`
    suffix kept; every other argument unchanged. For commands with a `--config` file flag."""
    def resolve(value: str) -> str:
        name, sep, rest = value.partition(":")
        if name in PACKAGED_CONFIGS and not os.path.exists(name):
            return os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                                f"{name}.py") + sep + rest
        return value

    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            out[i] = "--config=" + resolve(arg[len("--config="):])
        elif arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve(out[i + 1])
    return out


def _quiet_background_errors(verbosity: int) -> None:
    """Below --verbosity=1, an exception in a library's background thread (a checkpoint or
    event-file writer hitting a full disk) or in an exit handler prints nothing: the same
    failure reaches the command's main path, which reports it in one line."""
    if verbosity >= 1:
        return
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda unraisable: None


def set_verbosity(level: int) -> None:
    """absl logging at `level` (-2 errors, -1 warnings, 0 info, 1 debug), and the Python loggers
    of the libraries that log through the standard `logging` module at the same threshold."""
    logging.set_verbosity(level)
    threshold = (std_logging.DEBUG if level >= 1 else std_logging.INFO if level == 0
                 else std_logging.WARNING if level == -1 else std_logging.ERROR)
    for name in ("jax", "orbax", "absl"):
        std_logging.getLogger(name).setLevel(threshold)
