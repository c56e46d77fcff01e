"""The wrapper of every Hydra command: a user error is one line and status 2, never a traceback.

``main = hydra_command("train", train, show=run_summary)`` is the console script's entry point
calling the library function ``train(cfg)``:

- **Config errors before the run** (an unknown group or key, an option a group lacks, an
  override that does not parse, a ``???`` key left unset): until the run starts the wrapper sets
  Hydra's documented ``HYDRA_FULL_ERROR=1``, so Hydra raises them instead of printing several
  lines and exiting 1; each becomes one ``error:`` line naming the override and pointing at
  ``--help``. Hydra composes the config once: no added start-up cost.
- **Checked as the run starts** (:func:`check_config`): every ``???`` key is set, and a plain
  ``key=value`` override has the default's kind (``optim.lr=abc`` where the default is a number).
- **User errors of the run** (:class:`asr_kd.errors.UserError`) are one line too. Any other
  exception is a bug and keeps Hydra's traceback. ``HYDRA_FULL_ERROR=1`` set by the user shows
  the full traceback of every error, user errors included.
- A refused run leaves no run directory behind that holds only Hydra's ``.hydra/`` and logs;
  a directory that held anything else before the run is never removed.
- The run's ``<job>.log`` (Hydra's job log in the run directory, e.g. ``train.log``) gets the
  command line, Lightning's messages, the outcome (:func:`report`) and the error line.
- Under a launcher (torchrun, srun, Lightning's own DDP processes) only rank 0 writes the run's
  files: the other ranks write no ``.hydra/`` and no ``<job>.log`` (their console output is the
  launcher's to collect), report nothing and remove nothing, so N ranks leave one set of files.

Usage (asr_kd/cli/train.py):
    main = hydra_command("train", train, show=run_summary)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from asr_kd.config import CONF_DIR, check_renamed, command_name
from asr_kd.errors import ConfigError, UserError

__all__ = [
    "EXIT_USER_ERROR",
    "check_config",
    "config_error",
    "hydra_command",
    "report",
    "run_log",
    "run_summary",
]

EXIT_USER_ERROR = 2
_FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra's switch: raise errors instead of printing them
_HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}  # what Hydra writes in .hydra/
# Hydra's overrides for ranks other than 0: no .hydra/ files, logs on the console only. Hydra
# reads them from sys.argv, as Lightning's own DDP launcher passes its per-process overrides.
_OTHER_RANK_OVERRIDES = ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
# Lightning adds its own console handler and stops propagating when it is imported before Hydra
# configures logging (our commands import it first), so its messages miss the job's log file.
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
_ABSENT = object()

# The run's log files only, not the console: the command line, the outcome, a refusal.
run_log = logging.getLogger("asr_kd.cli.run")
run_log.propagate = False


def report(text: str) -> None:
    """A command's outcome: on stdout, as printed before (scripts may read it), and in the log."""
    print(text, flush=True)
    run_log.info(text)


def _fail(message: str) -> NoReturn:
    print("error: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def _help_hint(prog: str) -> str:
    return f"`{prog} --help` lists the groups and keys"


def _missing(keys: list[str], prog: str) -> str:
    given = " ".join(f"{key}=<value>" for key in keys)
    verb = "is" if len(keys) == 1 else "are"
    return f"{', '.join(keys)} {verb} required and not set: add {given}; {_help_hint(prog)}"


def config_error(err: Exception, prog: str) -> str:
    """One line (without ``error:``) for a Hydra/OmegaConf error raised before the run."""
    hint, text = _help_hint(prog), str(err)
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return (
            f"{group}={option}: config group {group!r} of {prog} has no option {option!r} "
            f"(options: {', '.join(err.options)}); {hint}"
        )
    if isinstance(err, OverrideParseException):
        why = err.message.splitlines()[0] if err.message else "syntax error"
        return (
            f"cannot parse the override `{err.override}`: {why} (override syntax: "
            f"https://hydra.cc/docs/advanced/override_grammar/basic/); {hint}"
        )
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        given = re.search(r"use \+(\S+)", text)
        what = f"`{given[1]}`" if given else repr(unknown[1])
        keys = _sibling_keys(err, unknown[1])
        return f"{what}: {prog} has no config group or key {unknown[1]!r}{keys}; {hint}"
    missing = re.search(r"Missing mandatory value: ([\w.\[\]]+)", text)
    if missing:
        return _missing([missing[1]], prog)
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += "\n" + str(err.__cause__).splitlines()[0]
    lines = []
    for line in text.splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines).rstrip(".") + f"; {hint}"


def _sibling_keys(err: Exception, key: str) -> str:
    """`` (distill has: source, alpha, ...)`` for an unknown key inside a section; '' at the top
    level, where ``--help`` lists the groups."""
    parent = getattr(err.__cause__, "parent_node", None)
    section = key.rpartition(".")[0]
    if not section or not isinstance(parent, DictConfig):
        return ""
    return f" ({section} has: {', '.join(map(str, parent.keys()))})"


def _kind_problem(default: Any, value: Any) -> str | None:
    """What ``value`` should be, given the default's kind; None when it fits (null always does)."""
    if value is None or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "a number"
    if isinstance(default, DictConfig):
        keys = ", ".join(list(default)[:4]) + (", ..." if len(default) > 4 else "")
        return None if isinstance(value, DictConfig) else f"keys ({keys}), set one by one"
    return None  # strings and lists take any value (a bare value is a one-item list)


def check_config(cfg: DictConfig, prog: str) -> None:
    """``ConfigError`` for a ``???`` key left unset, or a ``key=value`` override of another kind
    than the key's default (a string or a list where the default is a number, ...)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(_missing(missing, prog))
    hydra_cfg = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    groups = set(hydra_cfg.runtime.choices)

    def plain(o) -> bool:  # key=value on a key the config has (not a group, add, delete, hydra.)
        key = o.key_or_group
        return not (o.is_add() or o.is_delete() or o.package or key.startswith("hydra"))

    values = [o for o in overrides if plain(o) and o.key_or_group not in groups]
    suspects = [o for o in values if not isinstance(_select(cfg, o.key_or_group), (int, float))]
    suspects = [o for o in suspects if _select(cfg, o.key_or_group) is not None]
    if not suspects:
        return  # numbers and nulls pass (1 reads as true, too): no second composition
    kept = [o.input_line for o in overrides if all(o is not v for v in values)]
    defaults = hydra.compose(config_name=hydra_cfg.job.config_name, overrides=kept)
    for o in suspects:
        default = _select(defaults, o.key_or_group)
        want = None if default is _ABSENT else _kind_problem(default, _select(cfg, o.key_or_group))
        if want:
            shown = "" if isinstance(default, DictConfig) else f" (default {default!r})"
            raise ConfigError(
                f"`{o.input_line}`: {o.key_or_group} takes {want}{shown}; {_help_hint(prog)}"
            )


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
    return value if not isinstance(value, ListConfig) else list(value)


def _user_error(err: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``err``: itself, or what ``hydra.utils.instantiate`` (the data
    module, a model) wrapped in an ``InstantiationException``; None for anything else (a bug)."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err if isinstance(err, UserError) else None


def _holds_only_hydra_files(run_dir: Path, subdir: str | None, empty_logs: bool) -> bool:
    """``run_dir`` holds nothing but Hydra's ``subdir`` (``.hydra/`` and its three files) and
    ``*.log`` files (empty ones if ``empty_logs``)."""
    if not run_dir.is_dir():
        return False
    for entry in run_dir.iterdir():
        if entry.suffix == ".log" and entry.is_file() and not entry.is_symlink():
            if empty_logs and entry.stat().st_size:
                return False
        elif not (
            subdir
            and entry.name == subdir
            and entry.is_dir()
            and not entry.is_symlink()
            and {p.name for p in entry.iterdir()} <= _HYDRA_FILES
        ):
            return False
    return True


def _log_into_run_files() -> list[tuple[logging.Logger, logging.Handler]]:
    """Attach the job's log files (the root logger's file handlers, set up by Hydra) to
    :data:`run_log` and Lightning's loggers; returns what was attached, to detach it after."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    added = []
    for logger in (run_log, *map(logging.getLogger, _LIGHTNING_LOGGERS)):
        if logger is not run_log and logger.propagate:
            continue  # reaches the root's file handler anyway
        for handler in files:
            if handler not in logger.handlers:
                logger.addHandler(handler)
                added.append((logger, handler))
    return added


class _Invocation:
    """One call of a command: Hydra's errors before the run, the run's user errors, its run dir."""

    def __init__(self, prog: str, rank_zero: bool = True):
        self.prog = prog
        self.rank_zero = rank_zero
        self.env = os.environ.get(_FULL_ERROR)
        self.tracebacks = self.env == "1"  # the user asked for full tracebacks (Hydra's test)
        self.started = False

    def _restore_env(self) -> None:
        if self.env is None:
            os.environ.pop(_FULL_ERROR, None)
        else:
            os.environ[_FULL_ERROR] = self.env

    def __call__(self, hydra_main: Callable[[], Any]) -> None:
        if self.tracebacks:
            hydra_main()
            return
        os.environ[_FULL_ERROR] = "1"
        try:
            hydra_main()
        except (HydraException, OmegaConfBaseException) as err:
            if self.started:
                raise
            _fail(config_error(err, self.prog))
        finally:
            self._restore_env()

    def run(self, main: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
        self.started = True
        self._restore_env()  # a bug now gets Hydra's usual report; DDP ranks see the user's env
        hydra_cfg = HydraConfig.get()
        run_dir, subdir = Path(hydra_cfg.runtime.output_dir), hydra_cfg.output_subdir
        fresh = self.rank_zero and _holds_only_hydra_files(run_dir, subdir, empty_logs=True)
        attached = _log_into_run_files()
        run_log.info("%s %s", self.prog, " ".join(hydra_cfg.overrides.task))
        try:
            check_config(cfg, self.prog)
            return main(cfg)
        except (UserError, InstantiationException) as err:
            user = _user_error(err)
            if user is None or self.tracebacks:
                raise
            line = " ".join(str(user).split())
            run_log.error("error: %s", line)
            if fresh and _holds_only_hydra_files(run_dir, subdir, empty_logs=False):
                shutil.rmtree(run_dir, ignore_errors=True)  # the run made it and wrote nothing
            _fail(line)
        finally:
            for logger, handler in attached:
                logger.removeHandler(handler)


def hydra_command(
    config_name: str,
    run: Callable[[DictConfig], Any],
    show: Callable[[Any, DictConfig], str] | None = None,
    rank_zero: Callable[[], bool] | None = None,
) -> Callable[[], None]:
    """The entry point of ``asr-kd-<config_name>``: ``@hydra.main`` on ``conf/<config_name>.yaml``
    calling the library function ``run(cfg)``, errors as described in the module docstring.

    ``show(result, cfg)`` is the text the command reports (stdout and the run log); None for a
    command that prints its own table, whose result then goes to the run log as JSON.
    ``rank_zero()`` (a command that runs under a launcher:
    :func:`asr_kd.training.launch.is_global_zero`) says whether this process writes the run's
    files; None: it always does. Hydra names the job, and its ``<job>.log``, after
    ``asr_kd.cli.<config_name>``.
    """
    prog = command_name(config_name)

    def main(cfg: DictConfig, primary: bool) -> None:
        result = run(cfg)
        if not primary:
            return
        if show is None:
            run_log.info("result: %s", json.dumps(result))
        else:
            report(show(result, cfg))

    def entry_point() -> None:
        primary = rank_zero is None or rank_zero()
        call = _Invocation(prog, primary)

        def task(cfg: DictConfig) -> Any:
            return call.run(lambda c: main(c, primary), cfg)

        task.__module__ = f"{__package__}.{config_name}"  # the job's name: <config_name>
        try:
            check_renamed(config_name, sys.argv[1:])
        except ConfigError as err:
            _fail(str(err))
        if not primary:
            sys.argv += _OTHER_RANK_OVERRIDES
        call(
            hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)
        )

    entry_point.__doc__ = f"``{prog}``: see conf/{config_name}.yaml or ``{prog} --help``."
    return entry_point


def run_summary(result: dict, cfg: DictConfig | None = None) -> str:
    """A training run's result as a command reports it: every key but the metrics history."""
    return str({k: v for k, v in result.items() if k != "metrics"})
