"""DDP inside a Hydra job: the ranks Lightning starts join this job's run folder.

With ``trainer=ddp`` Lightning starts the other ranks of a job by running the script
again. Its Hydra-aware command (``lightning.fabric.strategies.launchers.
subprocess_script._hydra_subprocess_cmd``) replays ``sys.argv`` with ``hydra.run.dir``
set; inside a multirun that replays ``-m`` and the whole sweep (each child would start a
sweep of its own into other folders), and inside a submitit job it re-runs submitit's
worker. :func:`ddp_ranks_join_this_job` replaces that command, for the duration of one
job, with ``python -m pl_pruning <this job's overrides> hydra.run.dir=<this job's
folder> hydra.mode=RUN``, so every rank works in the same run folder. After the job it
tears the process group down and restores the environment Lightning changed
(``MASTER_PORT``, ``LOCAL_RANK``, ...), so the next job of a sweep in the same process
starts its own ranks instead of waiting for the old ones. Under SLURM (or torchrun) the
ranks are started by the cluster and nothing is replayed.

This is the only place that touches Lightning internals; it depends on the name
``_hydra_subprocess_cmd`` in Lightning's two launcher modules and does nothing where
that name is gone.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig

# Environment variables Lightning's launcher sets in the process that starts the ranks.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# The app's own config package: not repeated on a child's command line.
APP_CONFIG = ("pkg", "pl_pruning.conf")


def quote(value: str) -> str:
    """A value for a Hydra override, quoted so that any path parses back to itself. Inside
    quotes Hydra reads backslashes as escapes only in a run before a quote (the closing one
    included): those runs are doubled and the quote escaped; other backslashes stay."""
    escaped = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return '"' + escaped + '"'


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and its working directory) that starts rank ``local_rank`` of the
    running Hydra job: this job's overrides, config sources and folder, in run mode."""
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, "-m", "pl_pruning", f"--config-name={hc.job.config_name}"]
    for source in hc.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            command.append(f"--config-dir={source.path}")
        elif source.provider == "main" and (source.schema, source.path) != APP_CONFIG:
            path = source.path if source.schema == "file" else f"{source.schema}://{source.path}"
            command.append(f"--config-path={path}")
    command += list(hc.overrides.task)
    command += [f"hydra.run.dir={quote(str(hc.runtime.output_dir))}", "hydra.mode=RUN",
                f"hydra.job.chdir={bool(hc.job.chdir)}", f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null"]  # rank 0 already wrote .hydra/
    return command, get_original_cwd()


@contextmanager
def ddp_ranks_join_this_job() -> Iterator[None]:
    """Ranks started by Lightning join this job's run folder; clean up after the job.

    Lightning imports ``_hydra_subprocess_cmd`` by name into its launcher modules, so it is
    replaced there for the duration of the job only.
    """
    import lightning.fabric.strategies.launchers.subprocess_script as fabric_launcher
    import lightning.pytorch.strategies.launchers.subprocess_script as pytorch_launcher

    starts_ranks = "LOCAL_RANK" not in os.environ  # not a child rank, not under SLURM/torchrun
    env_before = dict(os.environ)
    patched = [(m, m._hydra_subprocess_cmd) for m in (fabric_launcher, pytorch_launcher)
               if hasattr(m, "_hydra_subprocess_cmd")]
    for module, _ in patched:
        module._hydra_subprocess_cmd = child_command
    try:
        yield
    finally:
        for module, original in patched:
            module._hydra_subprocess_cmd = original
        if starts_ranks:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for key in DIST_ENV:
                if key in env_before:
                    os.environ[key] = env_before[key]
                else:
                    os.environ.pop(key, None)
