"""Launch a training script on several ranks: ``python -m tracejit.distributed.run -n 4
train.py [args...]`` runs ``mpiexec -n 4 python train.py [args...]``.

Options before the script: ``-n/--nproc`` ranks; ``--hosts a,b`` or ``--hostfile FILE`` to run
across machines (passed to ``mpiexec -hosts`` / ``-f``); ``--threads K`` numba and BLAS threads
per rank (default: the cores divided among the local ranks); ``--timeout S`` how long a
collective waits for the other ranks (``TRACEJIT_DIST_TIMEOUT``); ``--mpiexec PATH``;
``--mpi-arg=X`` (repeatable) passes X to mpiexec.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from ._group import INSTALL


def find_mpiexec(explicit: str | None = None) -> str:
    """The ``mpiexec`` to use: the given one, the one beside this Python (the mpich wheel puts
    it there), or the first on PATH."""
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        raise SystemExit(f"tracejit.distributed.run: no mpiexec found beside {sys.executable} "
                         f"or on PATH. {INSTALL}")
    return found


def command(args) -> tuple[list, dict]:
    """The mpiexec command line and environment for parsed ``args``."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise SystemExit(f"tracejit.distributed.run: mpi4py is not installed. {INSTALL}") from None
    cmd = [find_mpiexec(args.mpiexec), "-n", str(args.nproc)]
    if args.hosts:
        cmd += ["-hosts", args.hosts]
    if args.hostfile:
        cmd += ["-f", args.hostfile]
    cmd += args.mpi_args or []
    cmd += [sys.executable, args.script, *args.script_args]
    env = dict(os.environ)
    threads = args.threads
    if threads is None and not (args.hosts or args.hostfile):
        threads = max(1, (os.cpu_count() or 1) // args.nproc)
    if threads is not None:
        for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
    if args.timeout is not None:
        env["TRACEJIT_DIST_TIMEOUT"] = str(args.timeout)
    return cmd, env


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tracejit.distributed.run",
                                description="run a script on several MPI ranks (mpiexec)")
    p.add_argument("-n", "--nproc", "--nproc-per-node", type=int, default=1,
                   help="number of ranks")
    p.add_argument("--hosts", help="comma-separated host names (mpiexec -hosts)")
    p.add_argument("--hostfile", help="a file of host names (mpiexec -f)")
    p.add_argument("--threads", type=int, default=None,
                   help="numba/BLAS threads per rank (default: local cores / ranks)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds a collective waits for the other ranks before aborting")
    p.add_argument("--mpiexec", default=None, help="the mpiexec to run")
    p.add_argument("--mpi-arg", action="append", dest="mpi_args", default=None,
                   help="one more argument for mpiexec (repeatable), e.g. --mpi-arg=-bind-to")
    p.add_argument("script")
    p.add_argument("script_args", nargs=argparse.REMAINDER)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.nproc < 1:
        raise SystemExit("tracejit.distributed.run: -n must be at least 1")
    cmd, env = command(args)
    rc = subprocess.call(cmd, env=env)
    if rc != 0:
        print(f"tracejit.distributed.run: {' '.join(cmd[:3])} ... exited with status {rc} "
              f"(a rank failed; its error is above)", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
