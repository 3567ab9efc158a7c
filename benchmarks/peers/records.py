"""The peers' results files: ``{"runs": [record, ...]}``, one record per run, upserted by ``run_id``.

Records are rewritten as a run goes (after every evaluation), so a run cut short still leaves its curve.
The file is replaced atomically under an advisory lock, so two runs writing one file do not lose records.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import platform
import tempfile


def default_results_path(repo_root: str, date: str | None = None) -> str:
    date = date or datetime.date.today().isoformat()
    return os.path.join(repo_root, "benchmarks", "results", f"peers-nayer-{date}.json")


@contextlib.contextmanager
def _locked(path: str):
    """An advisory lock on ``path``, held in a file of the temp dir (never left beside the results)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    key = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"fastcae-peers-{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_runs(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        data = json.load(f)
    return data["runs"] if isinstance(data, dict) else data


def upsert_run(path: str, record: dict) -> None:
    """Insert ``record`` into ``path`` or replace the one with its ``run_id``."""
    with _locked(path):
        runs = [r for r in load_runs(path) if r.get("run_id") != record["run_id"]]
        runs.append(record)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"runs": runs}, f, indent=1)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a results file is for everyone to read
        os.replace(tmp, path)


def machine_info() -> dict:
    """What the numbers ran on: CPU model and count, threads, the GPU if any, and a host hint."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "host": os.environ.get("FASTCAE_MACHINE", platform.node()),
    }
