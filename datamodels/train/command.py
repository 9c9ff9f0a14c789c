"""``trainer.kind = "command"``: any program (any language or framework) trains one model per call.

``trainer.command`` is a template, split like a shell line (no shell runs it),
whose placeholders are filled per model:

    {index}   the model index
    {seed}    the model's own seed (datamodels.train.model_seed): differs between models, same on rerun
    {mask}    path of a .npy file, bool[n]: the pool examples this model trains on
    {out}     path the program writes its margins to: a .npy of float[k], one per target
    {data}    path of a .npz with x float32[n, ...], y int64[n], target_x float32[k, ...], target_y int64[k]
              (written once per block, only when the template uses it)
    {n} {k}   pool size and number of targets
    {python}  the Python interpreter running the engine

for example ``"{python} train.py --index {index} --seed {seed} --mask {mask}
--out {out}"``. Relative paths are relative to the directory the worker runs
in (where ``datamodels run`` was called; the submission directory under
SLURM). ``trainer.timeout`` seconds (0: none) bounds one call; a call past it
is killed with its whole process group.

A model whose command exits non-zero, is killed, writes nothing, or writes
something other than finite floats of shape [k] is a failed row: its reason
(exit code and the last lines of stderr, say) goes into the run, and the
other models go on. Margins are the only output.
"""

from __future__ import annotations

import os
import shlex
import signal
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DatamodelsError
from .base import model_seed, report_progress

PLACEHOLDERS = ("index", "seed", "mask", "out", "data", "n", "k", "python")
STDERR_LINES = 5  # of a failed command's stderr, kept in its row's failure reason
STDERR_CHARS = 360


def template_fields(command: str) -> list[str]:
    """The placeholder names a template uses; raises ValueError on a malformed template."""
    return [f for _, f, _, _ in string.Formatter().parse(command) if f is not None]


def check_template(command: str) -> str | None:
    """Why ``trainer.command`` is not a usable template, or None (syntax only: nothing runs)."""
    if not command.strip():
        return "is empty (trainer.kind = 'command' needs the command that trains one model)"
    try:
        argv = shlex.split(command)
        fields = template_fields(command)
    except ValueError as e:
        return f"is not a valid command template ({e})"
    for f in fields:
        if f not in PLACEHOLDERS:
            return f"uses {{{f}}}, which is not one of " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    if "out" not in fields:
        return "has no {out}: the command must be told where to write its margins"
    if not argv:
        return "is empty"
    return None


def train_command(spec, data, indices: np.ndarray, masks: np.ndarray, outputs) -> dict:
    tr = spec.trainer
    extra = [o for o in outputs if o != "margins"]
    if extra:
        raise DatamodelsError(f"trainer.kind = 'command' gives margins only, but {extra} were asked for.")
    why = check_template(tr.command)
    if why:
        raise DatamodelsError(f"trainer.command = {tr.command!r} {why}.")
    B, n, k = len(indices), int(masks.shape[1]), int(data.target_y.shape[0])
    margins = np.full((B, k), np.nan, dtype=np.float32)
    failure = [""] * B
    uses = set(template_fields(tr.command))
    with tempfile.TemporaryDirectory(prefix="datamodels-command-") as tmp:
        tmp = Path(tmp)
        data_path = _write_data(data, tmp / "data.npz") if "data" in uses else ""
        for r, index in enumerate(indices):
            mask_path, out_path = tmp / f"mask_{int(index)}.npy", tmp / f"margins_{int(index)}.npy"
            np.save(mask_path, np.asarray(masks[r], dtype=bool))
            fields = dict(index=int(index), seed=model_seed(spec, int(index)), mask=str(mask_path),
                          out=str(out_path), data=str(data_path), n=n, k=k, python=sys.executable)
            argv = [tok.format(**fields) for tok in shlex.split(tr.command)]
            result = run_one(argv, tr.timeout, out_path, k)
            if isinstance(result, str):
                failure[r] = result
            else:
                margins[r] = result
            mask_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)
            report_progress(1)
    return {"margins": margins, "failure": failure}


def run_one(argv: list[str], timeout: float, out_path: Path, k: int):
    """Run one model's command: its margins float32[k], or the sentence saying why there are none."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # its own process group: a timeout kills its children too
    except OSError as e:
        return f"command {argv[0]!r} could not start ({type(e).__name__}: {e.strerror or e})"
    try:
        _out, err = proc.communicate(timeout=timeout or None)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        _out, err = proc.communicate()
        return f"command timed out after {timeout:g} s and was killed{_tail(err)}"
    if proc.returncode < 0:
        sig = -proc.returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return f"command was killed by signal {name}{_tail(err)}"
    if proc.returncode != 0:
        return f"command exited with code {proc.returncode}{_tail(err)}"
    if not out_path.is_file():
        return f"command exited 0 but wrote nothing to {{out}} ({out_path.name}){_tail(err)}"
    try:
        arr = np.load(out_path, allow_pickle=False)
    except Exception as e:  # a truncated or non-.npy file
        return f"command's output {out_path.name} is not a readable .npy file ({type(e).__name__}: {e})"
    if not isinstance(arr, np.ndarray) or arr.shape != (k,):
        return f"command wrote margins of shape {list(getattr(arr, 'shape', []))}, not [k] = [{k}]"
    if not np.issubdtype(arr.dtype, np.floating):
        return f"command wrote margins of dtype {arr.dtype}, not a float dtype"
    return arr.astype(np.float32)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def _tail(err: bytes) -> str:
    lines = [ln.strip() for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    text = " | ".join(lines[-STDERR_LINES:])
    if len(text) > STDERR_CHARS:
        text = "..." + text[-STDERR_CHARS:]
    return f"; stderr: {text}"


def _write_data(data, path: Path) -> Path:
    np.savez(path, x=data.x.detach().cpu().numpy(), y=data.y.detach().cpu().numpy(),
             target_x=data.target_x.detach().cpu().numpy(), target_y=data.target_y.detach().cpu().numpy())
    return path
