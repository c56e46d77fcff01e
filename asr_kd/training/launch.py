"""The launcher a training command runs under: which rank this process is, and whether the
trainer's ``num_nodes * devices`` is the number of processes the launcher started.

A run on N nodes is started by a launcher, never by the command itself: torchrun on every node,
or SLURM's ``srun`` inside an allocation. Lightning reads their environments (the same rules,
in the same order, as here: torchrun first, since it also runs inside SLURM jobs). What it does
not do is refuse a mismatch before the run starts: ``trainer.num_nodes=2`` without a launcher
makes Lightning start one node's processes and wait forever for the other node's ranks, and a
torchrun or srun world of another size fails after the run wrote its config and logs.

Usage:
    check_launch(cfg.trainer)            # ConfigError before anything is written
    if is_global_zero(): write_run_files()
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import OmegaConf

from asr_kd.errors import ConfigError

__all__ = [
    "check_launch",
    "is_global_zero",
    "launcher_world_size",
    "precision_dtype",
    "rank_device",
]


def is_global_zero() -> bool:
    """Whether this process is the run's rank 0, as its launcher says: torchrun's ``RANK``,
    srun's ``SLURM_PROCID``, or the ``LOCAL_RANK``/``NODE_RANK`` that Lightning gives the DDP
    processes it starts itself (``trainer=ddp_cpu``); True with no launcher."""
    if TorchElasticEnvironment.detect():
        return int(os.environ["RANK"]) == 0
    if SLURMEnvironment.detect():
        return int(os.environ.get("SLURM_PROCID", "0")) == 0
    return all(int(os.environ.get(name, "0")) == 0 for name in ("LOCAL_RANK", "NODE_RANK"))


def launcher_world_size() -> int | None:
    """How many processes the launcher started in all (torchrun's ``WORLD_SIZE``, srun's
    ``SLURM_NTASKS``, or a ``WORLD_SIZE`` set for Lightning's own processes); None without one."""
    if TorchElasticEnvironment.detect():
        return int(os.environ["WORLD_SIZE"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_NTASKS"])
    world = os.environ.get("WORLD_SIZE")
    return None if world is None else int(world)


def _devices_per_node(trainer: Mapping[str, Any]) -> int | None:
    """``trainer.devices`` as a count: an int, a list of device ids, or every visible GPU for
    ``-1``/``"auto"`` with a GPU accelerator; None where Lightning decides later (CPU ``auto``)."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if str(devices) in ("-1", "auto") and trainer.get("accelerator") in ("gpu", "cuda"):
        return torch.cuda.device_count() or None
    return None


def check_launch(trainer: Mapping[str, Any]) -> None:
    """Refuse a trainer config that does not match the launcher, before anything is written.

    Raises:
        ConfigError: ``trainer.num_nodes > 1`` with no launcher (no torchrun, no srun, no
            ``NODE_RANK`` set by hand for Lightning), or a launcher world size other than
            ``trainer.num_nodes * trainer.devices``.
    """
    num_nodes = int(trainer.get("num_nodes", 1))
    world = launcher_world_size()
    if world is None:
        if num_nodes > 1 and "NODE_RANK" not in os.environ:
            raise ConfigError(
                f"trainer.num_nodes={num_nodes} but no launcher started this command: run every "
                "node's processes with torchrun (--nnodes, --node-rank) or srun in a SLURM "
                "allocation (the recipes: LAUNCH=...); alone it waits forever for the other "
                "nodes' ranks"
            )
        return
    per_node = _devices_per_node(trainer)
    expected = None if per_node is None else per_node * num_nodes
    if world % num_nodes or (expected is not None and expected != world):
        devices = trainer.get("devices", "auto")
        raise ConfigError(
            f"the launcher started {world} processes but trainer.num_nodes * trainer.devices = "
            f"{num_nodes} * {devices}{'' if expected is None else f' = {expected}'}: set them to "
            "the launcher's nodes and processes per node (a mismatch waits forever for ranks that "
            "never come)"
        )


def rank_device(trainer: Mapping[str, Any]) -> torch.device:
    """The device this process trains on, known before Lightning starts: GPU ``LOCAL_RANK``
    (or that entry of a ``trainer.devices`` list) with a GPU accelerator and CUDA present, else
    the CPU. Where an online teacher is loaded, so that it never passes through the CPU."""
    if trainer.get("accelerator") not in ("gpu", "cuda", "auto") or not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    devices = trainer.get("devices", "auto")
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return torch.device("cuda", int(list(devices)[local]))
    return torch.device("cuda", local)


def precision_dtype(precision: Any) -> torch.dtype | None:
    """The dtype of a frozen model's weights under ``trainer.precision``: half precision for
    the mixed and true half settings, None (float32) for the rest.

    >>> precision_dtype("bf16-mixed"), precision_dtype("16-mixed"), precision_dtype("32-true")
    (torch.bfloat16, torch.float16, None)
    """
    name = str(precision)
    if name.startswith("bf16"):
        return torch.bfloat16
    if name.split("-")[0] == "16":
        return torch.float16
    return None
