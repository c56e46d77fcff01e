"""Where the Hydra configs live, and composing them without the command line.

Hydra stays at the edge (STYLE.md rule 3): entry points are ``@hydra.main`` wrappers
around plain functions that take a ``DictConfig``; tests call those functions with a
config from :func:`compose`.

Usage:
    cfg = compose("train", ["model=student_tiny", "data.dir=data/synth"])
    figures = asr_kd.training.run.train(cfg)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as _hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from asr_kd.errors import ConfigError
from asr_kd.schemas import KDConfig

__all__ = [
    "CONF_DIR",
    "RENAMED_KEYS",
    "as_list",
    "check_renamed",
    "command_name",
    "compose",
    "help_groups",
    "help_header",
    "register_schemas",
    "save_config",
]


def _find_conf_dir(package: Path) -> Path:
    """The configs: the repository's top-level ``conf/``, which the wheel ships as the package
    data of ``asr_kd.conf`` (setup.py). So they lie inside the package when it is installed
    from a wheel (``pip install .``: ``site-packages/asr_kd/conf``), and beside it in a checkout
    (``pip install -e .``, or the checkout on ``PYTHONPATH``)."""
    candidates = (package / "conf", package.parent / "conf")
    for conf_dir in candidates:
        if (conf_dir / "train.yaml").is_file():
            return conf_dir
    raise FileNotFoundError(
        f"asr_kd's configs are missing: no train.yaml in {candidates[0]} (installed package) "
        f"or {candidates[1]} (checkout); reinstall asr_kd from its repository"
    )


# Every command's primary config dir (``@hydra.main(config_path=str(CONF_DIR))``), and the one
# place its location is worked out.
CONF_DIR = _find_conf_dir(Path(__file__).resolve().parent)


# One spelling per idea across commands: a checkpoint is ``ckpt`` (``teacher_ckpt`` for the
# teacher, ``ckpt.<name>`` for evaluate's several), a batch is ``data.max_duration`` seconds, the
# subsets read are ``subsets``. primary config -> {old key: the key that replaced it}.
RENAMED_KEYS = {
    "evaluate": {"checkpoints": "ckpt"},
    "dump_targets": {"subset": "subsets", "max_duration": "data.max_duration"},
}


def check_renamed(config_name: str, overrides: Sequence[str]) -> None:
    """A ``ConfigError`` naming the new key for an override that spells a renamed one
    (``checkpoints.teacher=X`` -> ``ckpt.teacher=X``)."""
    renamed = RENAMED_KEYS.get(config_name, {})
    for override in overrides:
        plain = override.lstrip("+~")
        key = plain.split("=", 1)[0]
        for old, new in renamed.items():
            if key == old or key.startswith(old + "."):
                fixed = override[: len(override) - len(plain)] + new + plain[len(old) :]
                raise ConfigError(
                    f"{override}: {command_name(config_name)} spells {old!r} as {new!r} now; "
                    f"pass {fixed}"
                )


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the primary config ``conf/<config_name>.yaml`` with command-line style overrides."""
    check_renamed(config_name, overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _hydra_compose(config_name=config_name, overrides=list(overrides))


def save_config(cfg: DictConfig, out_dir: str | Path) -> Path:
    """Write the resolved config to ``<out_dir>/config.yaml`` (every command's run directory;
    evaluate, export and transcribe read a run's settings back from there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "config.yaml"
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def as_list(value) -> list:
    """A list-valued key given as one bare value (``subsets=test``, ``chunk_sizes_ms=320``) as a
    list of that value; repeated entries dropped, order kept."""
    values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    return list(dict.fromkeys(values))


def help_header(config_name: str) -> str:
    """The comment block at the top of ``conf/<config_name>.yaml``, uncommented: the command's
    ``--help`` header (conf/hydra/help/asr_kd.yaml), so usage is written once, in the config."""
    lines = []
    for line in (CONF_DIR / f"{config_name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[2:] if line.startswith("# ") else line[1:])
    return "\n".join(lines) + "\n"


def command_name(config_name: str) -> str:
    """The console script of a primary config: ``dump_targets`` -> ``asr-kd-dump-targets``."""
    return "asr-kd-" + config_name.replace("_", "-")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _adds_to(path: Path, cfg: DictConfig) -> bool:
    """A ``# @package _global_`` option (an experiment) whose every top-level key is in ``cfg``:
    one that ``+group=option`` can add to this command's config."""
    if not path.read_text().startswith("# @package _global_"):
        return False
    return set(OmegaConf.load(path)) <= set(cfg)


def help_groups(*, _root_: DictConfig) -> str:
    """The ``== Configuration groups ==`` section of ``--help``: only the groups this command's
    config has (``hydra.runtime.choices``; its choice in brackets), the ``+group`` presets that
    fit it, and an example built from them, so no example names a group the command rejects."""
    prog = command_name(_root_.hydra.job.config_name)
    chosen = {g: c for g, c in _root_.hydra.runtime.choices.items() if not g.startswith("hydra")}
    lines, example = [], []
    for group, choice in sorted(chosen.items()):
        options = _options(group)
        lines.append(f"{group} [{choice}]: {', '.join(options)}")
        other = next((o for o in options if o != choice), None)
        if other is not None:
            example.append(f"{group}={other}")
    for group in sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir()):
        if group == "hydra" or group in chosen:
            continue
        fits = [o for o in _options(group) if _adds_to(CONF_DIR / group / f"{o}.yaml", _root_)]
        if fits:
            lines.append(f"+{group} (adds a preset; none by default): {', '.join(fits)}")
            example.append(f"+{group}={fits[0]}")
    if not lines:
        return f"{prog} has no config groups: set the keys of the config below (key=value)"
    head = "Pick one option per group (group=option; [the one in use])"
    head += f", e.g. {' '.join(example)}" if example else ""
    return head + "\n\n" + "\n".join(lines)


def _help_footer(config_name: str) -> str:
    return (
        f"Each key is explained beside it in {CONF_DIR / config_name}.yaml and in the group files\n"
        f"under {CONF_DIR}/<group>/; the README's Commands section has examples.\n"
        "A mistake (a bad override, a missing file) prints one `error:` line, exit status 2;\n"
        "HYDRA_FULL_ERROR=1 prints its traceback instead.\n"
        "Powered by Hydra (https://hydra.cc); --hydra-help lists Hydra's own flags.\n"
    )


def register_schemas() -> None:
    """Each group's schema (:mod:`asr_kd.schemas`) as the group's ``base`` option, which every
    file of the group extends (``defaults: [base, _self_]``): the keys are declared there once,
    and a key the schema lacks fails to compose."""
    ConfigStore.instance().store(group="distill", name="base", node=KDConfig)


# Registered on import: every entry point imports CONF_DIR from here before Hydra builds --help.
OmegaConf.register_new_resolver("asr_kd_help_header", help_header, replace=True)
OmegaConf.register_new_resolver("asr_kd_help_groups", help_groups, replace=True)
OmegaConf.register_new_resolver("asr_kd_help_footer", _help_footer, replace=True)
register_schemas()
