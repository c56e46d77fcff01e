"""Every option of every config group composes and instantiates (configs otherwise drift from code).

Groups and options are discovered from ``conf/`` (each sub-directory is a group, each ``.yaml``
an option), and each group is composed through a primary config whose defaults list uses it,
so a file added by anyone is tested without editing this module. A group whose nodes have no
``_target_`` needs a builder in ``_BUILDERS``; a new group without one fails here on purpose.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hydra.utils
import lightning
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from asr_kd.config import CONF_DIR

# conf/hydra/ holds Hydra's own settings (help, run directory), not a group of ours.
GROUPS = {
    d.name: sorted(p.stem for p in d.glob("*.yaml"))
    for d in sorted(CONF_DIR.iterdir())
    if d.is_dir() and d.name != "hydra" and any(d.glob("*.yaml"))
}
PRIMARIES = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
OPTIONS = [(group, option) for group, options in GROUPS.items() for option in options]


def _compose(primary: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(primary, overrides=overrides, return_hydra_config=True)


@functools.cache
def _group_hosts() -> dict[str, str]:
    """group -> the first primary config whose defaults list selects an option of it."""
    hosts: dict[str, str] = {}
    for primary in PRIMARIES:
        for group in _compose(primary, []).hydra.runtime.choices:
            hosts.setdefault(str(group), primary)
    return hosts


def _trainer(node: dict) -> lightning.Trainer:
    """``trainer.*`` goes to lightning.Trainer as is; GPU options are built for CPU here."""
    if node.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        node = {**node, "accelerator": "cpu", "devices": 1}
    return lightning.Trainer(**node, logger=False, enable_checkpointing=False)


def _distill(node: dict):
    from asr_kd.distill.losses import KDConfig

    assert node["source"] in ("none", "cached", "online")
    assert node["k"] is None or int(node["k"]) > 0
    return KDConfig.from_options(node)


def _tokenizer(node: dict):
    """``tokenizer.*`` is read by asr-kd-prepare: kind char, bpe trained to ``vocab_size``, or
    from_teacher (``teacher`` given on the command line; here a tiny wav2vec2-conformer)."""
    import tempfile

    import wordfreq

    from asr_kd.data.teacher_vocab import teacher_vocab
    from asr_kd.data.tokenizer import Tokenizer, normalize_text

    if node["kind"] == "char":
        return Tokenizer.char()
    if node["kind"] == "from_teacher":
        from tests.helpers.hf_models import make_wav2vec2_conformer

        assert node["teacher"] == "???"  # required: hf:<dir or hub id>
        with tempfile.TemporaryDirectory() as tmp:
            return teacher_vocab(f"hf:{make_wav2vec2_conformer(Path(tmp))}").tokenizer
    words = wordfreq.top_n_list("en", 4000)
    texts = [normalize_text(" ".join(words[i : i + 12])) for i in range(0, len(words), 12)]
    tokenizer = Tokenizer.train_bpe(texts, vocab_size=node["vocab_size"])
    assert tokenizer.vocab_size == node["vocab_size"]
    return tokenizer


def _without_hydra(cfg: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def _corpus(node: dict):
    """``conf/corpus/*`` (asr-kd-synth's subsets): the settings, and speakers for every subset
    from the voice pool, disjoint (dev and test speakers never in train)."""
    from asr_kd.data.synthetic import assign_speakers, settings_from_config

    settings = settings_from_config(OmegaConf.create(node))
    speakers = assign_speakers(settings)
    ids = [s.speaker_id for subset in speakers.values() for s in subset]
    assert len(ids) == len(set(ids)) == sum(settings.speakers.values())
    return settings


_BUILDERS: dict[str, Callable[[dict], object]] = {
    "trainer": _trainer,
    "distill": _distill,
    "tokenizer": _tokenizer,
    "corpus": _corpus,
}


def _build(group: str, node: dict, data_dir: Callable[[], Path]) -> object:
    if "_target_" in node:
        if node.get("dir") == "???":  # conf/data/*: the data dir is given on the command line
            node = {**node, "dir": str(data_dir())}
        return hydra.utils.instantiate(node)
    if group not in _BUILDERS:
        pytest.fail(
            f"conf/{group}/ nodes have no _target_ and tests/test_configs.py has no builder"
        )
    return _BUILDERS[group](node)


def test_every_group_is_covered():
    assert {"model", "trainer", "distill", "data"} <= set(GROUPS), GROUPS
    assert len(OPTIONS) >= 8


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option, request):
    hosts = _group_hosts()
    if group in hosts:
        cfg = _compose(hosts[group], [f"{group}={option}"])
        assert cfg.hydra.runtime.choices[group] == option
        # a `# @package _global_` option (conf/corpus/) sets top-level keys: the whole config
        nodes = {group: cfg[group] if group in cfg else _without_hydra(cfg)}
    else:  # e.g. experiment/: `+experiment=name` on whichever primary it is written for
        cfg = _compose_experiment(group, option)
        nodes = {k: v for k, v in cfg.items() if k in hosts and OmegaConf.is_dict(v)}
    for name, node in nodes.items():
        plain = OmegaConf.to_container(node, resolve=True)
        expected = dict(plain)
        built = _build(name, plain, lambda: request.getfixturevalue("prepared_data_dir"))
        _assert_built_as_configured(name, expected, built)


# Keys whose value lightning.Trainer exposes under the same name.
_TRAINER_ATTRIBUTES = (
    "precision",
    "max_steps",
    "max_epochs",
    "val_check_interval",
    "check_val_every_n_epoch",
    "limit_val_batches",
    "num_sanity_val_steps",
    "gradient_clip_val",
    "accumulate_grad_batches",
    "log_every_n_steps",
)


def _assert_built_as_configured(group: str, node: dict, built: object) -> None:
    """The built object carries the node's values (not only: it was built)."""
    from asr_kd.data.datamodule import AsrDataModule
    from asr_kd.data.tokenizer import Tokenizer
    from asr_kd.distill.losses import KDConfig
    from asr_kd.models import ConformerCTC

    checked = {}
    if group == "model" and node["_target_"].startswith("asr_kd.models.hf_build."):
        checked = _hf_model_values(built)
    elif group == "model":
        assert isinstance(built, ConformerCTC)
        checked = {
            key: getattr(built, key)
            for key in (
                "vocab_size",
                "input_dim",
                "d_model",
                "num_heads",
                "subsampling_factor",
                "streaming",
                "train_chunk_sizes",
                "default_left_chunks",
            )
        }
        layer = built.layers[0]
        checked["num_layers"] = len(built.layers)
        checked["dropout"] = built.input_dropout.p
        checked["conv_kernel_size"] = layer.conv.depthwise.kernel_size[0]
        checked["conv_norm"] = "batch_norm" if layer.conv.batch_norm else "layer_norm"
        ff_dim, channels = layer.ff1[1].out_features, built.subsampling.conv[0].out_channels
        # null in the yaml: the model's defaults, 4 * d_model and d_model
        nulls = {"ff_dim": 4 * built.d_model, "subsampling_channels": built.d_model}
        for key, value in (("ff_dim", ff_dim), ("subsampling_channels", channels)):
            checked[key] = None if node.get(key) is None and value == nulls[key] else value
    elif group == "distill":
        assert isinstance(built, KDConfig)
        checked = dataclasses.asdict(built)
        assert list(node) == list(checked) == list(KDConfig.keys()), "the schema's keys, in order"
        labels = node.get("pseudo_labels")
        assert labels is None or labels is True or isinstance(labels, str)
        assert 0.0 <= node.get("pseudo_min_confidence", 0.0) <= 1.0
    elif group == "trainer":
        assert isinstance(built, lightning.Trainer)
        checked = {key: getattr(built, key) for key in _TRAINER_ATTRIBUTES if key in node}
        assert "max_steps" in checked and "precision" in checked
    elif group == "tokenizer":
        assert isinstance(built, Tokenizer)
        checked = {"kind": "from_teacher" if built.teacher is not None else built.kind}
        if "vocab_size" in node:
            checked["vocab_size"] = built.vocab_size
    elif group == "data":
        assert isinstance(built, AsrDataModule)
        checked = {
            "train_subset": built.train_subsets[0],
            "dev_subset": built.dev_subsets[0],
            "max_duration": built.max_duration,
            "num_buckets": built.num_buckets,
            "num_workers": built.num_workers,
            "speed_perturb": built.speed_perturb,
            "speed_factors": list(built.speed_factors),
            "shuffle": built.shuffle,
            "drop_last": built.drop_last,
            "seed": built.seed,
            "global_shuffle": built.global_shuffle,
            "buffer_size": built.buffer_size,
        }
    elif group == "corpus":
        checked = {"hours": built.hours, "speakers": built.speakers}
    else:
        pytest.fail(f"conf/{group}/: no check of what it builds in tests/test_configs.py")
    checked = {key: value for key, value in checked.items() if key in node}
    assert checked, f"conf/{group}/: none of its keys was checked"
    assert checked == {key: node[key] for key in checked}


def _hf_model_values(built) -> dict:
    """A conf/model/hf_*.yaml model (a transformers ParakeetForCTC): its config's values."""
    from asr_kd.models.hf import HFCTCModel

    assert isinstance(built, HFCTCModel) and built.reads_audio
    assert all(p.requires_grad for p in built.parameters()), "trainable"
    config, encoder = built.hf.config, built.hf.config.encoder_config
    assert encoder.layerdrop == 0.0 and config.pad_token_id == 0  # our blank
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": encoder.hidden_size,
        "num_layers": encoder.num_hidden_layers,
        "num_heads": encoder.num_attention_heads,
        "ff_dim": encoder.intermediate_size,
        "conv_kernel_size": encoder.conv_kernel_size,
        "subsampling_factor": encoder.subsampling_factor,
        "subsampling_channels": encoder.subsampling_conv_channels,
        "dropout": encoder.dropout,
    }


def _compose_experiment(group: str, option: str) -> DictConfig:
    errors = []
    for primary in PRIMARIES:
        try:
            return _compose(primary, [f"+{group}={option}"])
        except Exception as err:  # noqa: BLE001 - report every primary's reason below
            errors.append(f"{primary}: {err}")
    pytest.fail(
        f"conf/{group}/{option}.yaml composes with no primary config:\n" + "\n".join(errors)
    )


@pytest.mark.parametrize("primary", PRIMARIES)
def test_help_shows_the_commands_usage_and_where_its_keys_are_explained(primary):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(primary, return_hydra_config=True)
    header = OmegaConf.to_container(cfg.hydra.help, resolve=True)["header"]
    command = "asr-kd-" + primary.replace("_", "-")
    assert header.startswith(f"{command}: ") and "#" not in header.splitlines()[0]
    assert f"conf/{primary}.yaml" in cfg.hydra.help.footer


def test_help_of_an_installed_command():
    script = Path(sys.executable).parent / "asr-kd-export"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("asr-kd-export: a checkpoint -> ONNX graphs")
    assert "chunk_sizes_ms:" in out.stdout and "is powered by Hydra" not in out.stdout


def test_conf_dir_inside_an_installed_package_else_beside_the_package_in_a_checkout(tmp_path):
    from asr_kd.config import _find_conf_dir

    def tree(*files: str) -> None:
        for f in files:
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f).touch()

    # A wheel: site-packages/asr_kd/conf, even where another package left a site-packages/conf.
    tree("site/asr_kd/__init__.py", "site/asr_kd/conf/train.yaml", "site/conf/train.yaml")
    assert _find_conf_dir(tmp_path / "site/asr_kd") == tmp_path / "site/asr_kd/conf"
    # A checkout (editable install or PYTHONPATH): conf/ beside asr_kd/.
    tree("repo/asr_kd/__init__.py", "repo/conf/train.yaml")
    assert _find_conf_dir(tmp_path / "repo/asr_kd") == tmp_path / "repo/conf"
    # Neither (a wheel built without its configs): said before Hydra's own error.
    tree("bare/asr_kd/__init__.py")
    with pytest.raises(FileNotFoundError, match="configs are missing"):
        _find_conf_dir(tmp_path / "bare/asr_kd")


def _own_keys(option: str) -> tuple[list[str], dict]:
    """``conf/distill/<option>.yaml``'s defaults list and the keys it sets itself."""
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "distill" / f"{option}.yaml"))
    return node.pop("defaults"), node


@pytest.mark.parametrize("option", GROUPS["distill"])
def test_a_distill_file_states_only_what_differs_from_the_file_it_extends(option):
    from asr_kd.distill.losses import KDConfig

    defaults, own = _own_keys(option)
    assert defaults[-1] == "_self_" and len(defaults) == 2, defaults
    parent = defaults[0]
    inherited = (
        dataclasses.asdict(KDConfig())
        if parent == "base"
        else OmegaConf.to_container(_compose("distill", [f"distill={parent}"]).distill)
    )
    assert set(own) <= set(KDConfig.keys())
    assert {k: v for k, v in own.items() if inherited[k] == v} == {}, "restates a value"


def test_none_is_the_schemas_defaults_and_every_method_starts_from_them():
    from asr_kd.distill.losses import KDConfig

    assert _own_keys("none") == (["base", "_self_"], {})
    cfg = _compose("distill", ["distill=none"])
    assert OmegaConf.to_container(cfg.distill) == dataclasses.asdict(KDConfig())
    roots = {option: _own_keys(option)[0][0] for option in GROUPS["distill"]}
    assert {roots[o] for o in roots if roots[o] != "base"} == {"frame_kl"}


def test_an_unknown_distill_key_is_one_line_naming_it_and_the_valid_keys():
    from asr_kd.cli._command import config_error
    from asr_kd.distill.losses import KDConfig
    from asr_kd.errors import ConfigError

    valid = ", ".join(KDConfig.keys())
    assert valid.startswith("source, alpha, temperature, k, ") and len(KDConfig.keys()) == 17
    with pytest.raises(ConfigError) as refused:  # +distill.tempreature=2 composes; then this
        KDConfig.from_options({"alpha": 0.5, "tempreature": 2.0})
    assert str(refused.value) == f"unknown distill key(s) tempreature; expected one of {valid}"
    with pytest.raises(Exception) as composed:  # distill.tempreature=2: Hydra refuses it
        _compose("distill", ["distill.tempreature=2"])
    line = config_error(composed.value, "asr-kd-distill")
    assert "\n" not in line and line.startswith(
        "`distill.tempreature=2`: asr-kd-distill has no config group or key "
        f"'distill.tempreature' (distill has: {valid});"
    )


def test_every_command_runs_in_its_out_dir_from_the_one_shared_setting():
    for primary in PRIMARIES:
        text = (CONF_DIR / f"{primary}.yaml").read_text()
        assert "chdir" not in text and "\nhydra:" not in text, f"conf/{primary}.yaml"
        cfg = _compose(primary, ["out_dir=/runs/x"])
        assert cfg.hydra.run.dir == "/runs/x" and cfg.hydra.job.chdir is False, primary
        assert cfg.hydra.output_subdir == ".hydra"


@pytest.mark.parametrize(
    ("command", "override", "fixed"),
    [
        ("evaluate", "checkpoints.teacher=t.ckpt", "ckpt.teacher=t.ckpt"),
        ("evaluate", "+checkpoints.mine=t.ckpt", "+ckpt.mine=t.ckpt"),
        ("dump_targets", "subset=[train,extra]", "subsets=[train,extra]"),
        ("dump_targets", "max_duration=50", "data.max_duration=50"),
    ],
)
def test_an_old_spelling_is_refused_naming_the_new_one(command, override, fixed):
    """One spelling per idea across commands (asr_kd.config.RENAMED_KEYS); the old one is one
    error naming the new one, not Hydra's 'not in struct'."""
    from asr_kd.config import compose as compose_command
    from asr_kd.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(f"pass {fixed}")):
        compose_command(command, [override])


def test_dump_targets_batch_is_data_max_duration():
    cfg = _compose("dump_targets", ["teacher_ckpt=t.ckpt"])
    assert cfg.data.max_duration == 200.0 and "max_duration" not in cfg and "subset" not in cfg
