"""A single-node SLURM cluster on this machine, for tests: ``munged``, ``slurmctld`` and
``slurmd`` from Debian's ``munge`` and ``slurm-wlm`` packages, run as root in the
foreground from a private folder (their own munge key and socket, free ports, state,
spool and logs), so nothing of the machine's own configuration is read or changed.

    cluster = SlurmCluster.start(folder)      # returns once the node is idle
    job = cluster.sbatch("--array=0-1", "job.sh")
    jobs = cluster.wait(job, timeout=600)     # scontrol's fields of every task: JobState ...
    cluster.stop()

Any other SLURM command finds the cluster through ``cluster.env`` (``SLURM_CONF``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "sinfo")
CPUS = 2
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED")  # job states not yet ended


def missing_reason() -> str | None:
    """Why no cluster can start here (``None`` when one can)."""
    missing = [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p) is None
               and not Path("/usr/sbin", p).exists()]
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} not found); "
                "`apt-get install slurm-wlm munge` provides it")
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root; these tests run as another user"
    return None


def _states(jobs: dict[str, dict[str, str]]) -> str:
    return ", ".join(f"{k} {j['JobState']}" for k, j in jobs.items())


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _real_memory_mb() -> int:
    """What slurmd will find on this machine (a node claiming more would be drained)."""
    out = subprocess.run([_daemon("slurmd"), "-C"], capture_output=True, text=True).stdout
    for word in out.split():
        if word.startswith("RealMemory="):
            return max(1, int(word.split("=")[1]) // 2)
    return 1000


@dataclass
class SlurmCluster:
    folder: Path
    node: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def logs(self) -> str:
        """The daemons' logs, for a failure message."""
        parts = []
        for name in DAEMONS:
            path = self.folder / f"{name}.log"
            if path.is_file():
                parts.append(f"--- {name}.log\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(parts)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
        """A SLURM client command against this cluster; its stdout."""
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {}), **self.env})
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{self.logs()}")
        return proc.stdout

    def sbatch(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Submit a batch job; its id (an array's job id)."""
        return self.run("sbatch", "--parsable", *args, env=env).strip().split(";")[0]

    def jobs(self, job_id: str) -> dict[str, dict[str, str]]:
        """``scontrol show job`` of a job (every task of an array), by job id (``<id>_<task>``
        for array tasks): JobState, Restarts, ExitCode ..."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id)
        jobs = {}
        for line in out.splitlines():
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            if "JobId" in fields:
                task = fields.get("ArrayTaskId")
                name = f"{fields['ArrayJobId']}_{task}" if task and task != "N/A" else fields["JobId"]
                jobs[name] = fields
        return jobs

    def wait(self, job_id: str, timeout: float, until=None, log: Path | None = None) -> dict[str, dict[str, str]]:
        """Wait until no task of the job is pending or running (or ``until()`` is true);
        the jobs' fields. A failure message ends with the last lines of ``log``."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs(job_id)
            if until is not None and until():
                return jobs
            ended = all(j["JobState"] not in ACTIVE for j in jobs.values())
            if ended and until is None:
                return jobs
            if ended or time.monotonic() > deadline:
                why = "ended before the awaited moment" if ended else f"still not done after {timeout:.0f} s"
                tail = log.read_text(errors="replace").splitlines()[-40:] if log and log.is_file() else []
                raise AssertionError("\n".join([f"job {job_id} {why}: {_states(jobs)}", *tail]))
            time.sleep(1)

    @classmethod
    def start(cls, folder: Path, timeout: float = 60) -> SlurmCluster:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        node = socket.gethostname().split(".")[0]
        cluster = cls(folder=folder, node=node)
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        sock = folder / "munge.socket"
        ctld_port, slurmd_port = _free_ports(2)
        for sub in ("state", "spool"):
            (folder / sub).mkdir(exist_ok=True)
        cluster.conf.write_text(f"""\
ClusterName=pltest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
InactiveLimit=0
MinJobAge=300
SchedulerParameters=sched_interval=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={_real_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
        commands = {
            "munged": [_daemon("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                       f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                       f"--seed-file={folder}/munged.seed"],
            "slurmctld": [_daemon("slurmctld"), "-D", "-i", "-f", str(cluster.conf)],
            "slurmd": [_daemon("slurmd"), "-D", "-N", node, "-f", str(cluster.conf)],
        }
        try:
            for name, command in commands.items():
                out = (folder / f"{name}.out").open("w")
                cluster.processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                          env={**os.environ, **cluster.env},
                                                          start_new_session=True))
                if name == "munged":
                    cluster._wait(lambda: sock.exists(), timeout, "munged's socket")
            cluster._wait(lambda: cluster._node_state() in ("idle", "mixed"), timeout, "the node to be idle")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _node_state(self) -> str:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=30)
        return proc.stdout.strip()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"no {what} after {timeout:.0f} s"
                outs = "\n".join((self.folder / f"{n}.out").read_text(errors="replace")[-2000:]
                                 for n in DAEMONS if (self.folder / f"{n}.out").is_file())
                raise RuntimeError(f"the test SLURM cluster did not start: {why}\n{outs}\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel what is left of the jobs, then end the daemons (slurmd first)."""
        if self.processes and all(p.poll() is None for p in self.processes):
            subprocess.run(["scancel", "--full", "--user=root"], env={**os.environ, **self.env},
                           capture_output=True, timeout=30)
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.processes.clear()
