"""A real single-node SLURM for the tests: munged, slurmctld and slurmd in a temp dir.

Everything is private to one cluster: its own munge key and socket (so it
never touches or stops a munged the machine already runs), free TCP ports for
slurmctld and slurmd, and state, spool, logs and slurm.conf under one
directory. Clients find it through ``SLURM_CONF``, which the fixture exports
for the test session and the tests' subprocesses.

Measured on a 2-core Debian 12 VM (slurm-wlm 22.05): starting takes about 1 s
after the packages are installed (``.ci/install.sh`` installs them in CI,
~15 s). ``batch_sched_delay=0`` starts queued tasks about 3 times sooner.
There is no accounting database, so ``sacct`` does not answer: finished jobs
are seen with ``squeue --states=all`` until ``MinJobAge`` expires.

Run ``python tests/slurm_cluster.py`` to start one by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

MAX_ARRAY_SIZE = 4  # tiny, so that a test of ~10 tasks splits into several arrays (real clusters: 1,001+)
CPUS = 2
PARTITION = "debug"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    for exe in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel", "scontrol", "sinfo"):
        if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists():
            return f"{exe} is not installed (install slurm-wlm and munge, or run .ci/install.sh with CI=true)"
    return None


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """One slurmctld + one slurmd (NodeName=localhost) + a private munged."""

    def __init__(self, root: Path | None = None, max_array_size: int = MAX_ARRAY_SIZE, cpus: int = CPUS):
        if os.geteuid() != 0:
            raise RuntimeError("starting a test SLURM needs root: munged runs as the munge user and "
                               "slurmd launches jobs as their owner")
        self.root = Path(root or tempfile.mkdtemp(prefix="dm-slurm-"))
        self.root.chmod(0o755)  # the munge user must reach its socket below
        self.max_array_size = max_array_size
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ munge
    def _start_munge(self) -> None:
        self.munge_dir.mkdir(mode=0o711)
        key = self.munge_dir / "munge.key"
        if shutil.which("mungekey"):
            subprocess.run([_exe("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        else:
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        munge = pwd.getpwnam("munge")
        for p in (self.munge_dir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        # munged refuses to run as root; -F keeps it our child so we can stop it
        self.procs["munged"] = subprocess.Popen(
            ["runuser", "-u", "munge", "--", _exe("munged"), "-F", f"--socket={self.socket}",
             f"--key-file={key}", f"--pid-file={self.munge_dir / 'munged.pid'}",
             f"--log-file={self.munge_dir / 'munged.log'}", f"--seed-file={self.munge_dir / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self._wait(lambda: self.socket.exists(), "munged", self.munge_dir / "munged.log")

    # ------------------------------------------------------------------ slurm
    def write_conf(self) -> None:
        for d in ("state", "spool", "log"):
            (self.root / d).mkdir(exist_ok=True)
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.conf.write_text("\n".join([
            "ClusterName=dmtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",  # no cgroups inside containers and VMs
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",  # schedule by CPU only: the node reports no memory
            "SchedulerType=sched/builtin",
            # batch_sched_delay=0 starts queued tasks ~3x sooner than the default
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
            f"MaxArraySize={self.max_array_size}",
            "MinJobAge=600",  # finished jobs stay visible to `squeue --states=all` (no sacct here)
            "ReturnToService=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=2",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def start(self) -> "SlurmCluster":
        try:
            self._start_munge()
            self.write_conf()
            env = self.env
            self.procs["slurmctld"] = subprocess.Popen(
                [_exe("slurmctld"), "-D", "-i", "-f", str(self.conf)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            # -N localhost: the machine's hostname is not in slurm.conf
            self.procs["slurmd"] = subprocess.Popen(
                [_exe("slurmd"), "-D", "-N", "localhost", "-f", str(self.conf)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
            self._wait(self._node_idle, "slurmd", self.root / "log" / "slurmd.log", timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self) -> bool:
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated")

    def _wait(self, ok, name: str, log: Path, timeout: float = 30) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            for pname, p in self.procs.items():
                if p.poll() is not None:
                    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
                    raise RuntimeError(f"{pname} exited with {p.returncode}: {err[-2000:]}{self.logs()}")
            if ok():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come up within {timeout} s{self.logs()}")

    def logs(self) -> str:
        out = []
        for f in (self.root / "log" / "slurmctld.log", self.root / "log" / "slurmd.log",
                  self.munge_dir / "munged.log"):
            if f.exists():
                out.append(f"\n--- {f.name} ---\n" + "\n".join(f.read_text(errors="replace").splitlines()[-30:]))
        return "".join(out)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check)

    def stop(self) -> None:
        if "slurmctld" in self.procs:  # cancel what is left so slurmstepd children go too
            subprocess.run(["scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name], env=self.env,
                           capture_output=True)
            time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM; SLURM_CONF is exported for the session."""
    why = missing_reason()
    if why:
        pytest.skip(f"SLURM tests need a local SLURM: {why}")
    cluster = SlurmCluster().start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    def _exit(signum, frame):
        raise SystemExit(0)

    # a background job ignores SIGINT: stop cleanly on SIGTERM too
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    c = SlurmCluster().start()
    print(f"export SLURM_CONF={c.conf}", flush=True)
    try:
        signal.pause()
    finally:
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)
