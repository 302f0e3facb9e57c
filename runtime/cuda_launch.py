"""Launch geometry of generated CUDA kernels: block sizes, grid limits and the matmul tile,
shared by the renderer (``codegen/cuda.py``, ``cuda_block.py``), which writes them into the
source, and the runner, which configures launchers with them. Smaller under numba-cuda's
simulator, where every thread and barrier costs milliseconds."""

from __future__ import annotations

from tracejit.cuda import simulator_requested

SIMULATOR = simulator_requested()
WARP = 32
# threads of a row-reduction block and of an elementwise block; tile edge of the matmul kernel
ROW_THREADS = 8 if SIMULATOR else 256
THREADS = 8 if SIMULATOR else 256
TILE = 4 if SIMULATOR else 16
# grid-stride loops cover any size with at most this many blocks (an H200 keeps about 1000
# blocks of 256 threads resident; more only adds scheduling)
MAX_BLOCKS = 2 if SIMULATOR else 4096
MAX_ROW_BLOCKS = 2 if SIMULATOR else 65535
PARTIALS = 2 if SIMULATOR else 1024  # blocks of a two-stage reduction's first stage


def grid(n: int) -> int:
    """Blocks for a grid-stride loop over ``n`` elements (at least 1)."""
    return max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS))


def row_grid(rows: int) -> int:
    """Blocks for a row kernel's loop over ``rows`` rows, one row per block at a time."""
    return max(1, min(rows, MAX_ROW_BLOCKS))


def tiles(n: int) -> int:
    return max(1, (n + TILE - 1) // TILE)
