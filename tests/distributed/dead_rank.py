"""Rank 1 dies (``die``) or never joins the collective (``hang``); rank 0 must not hang.
Run by tests/distributed/test_distributed.py through the launcher with a short timeout."""

import os
import sys
import time

import tracejit as tj
import tracejit.distributed as dist

dist.init_process_group()
if dist.get_rank() == 1:
    if sys.argv[1] == "die":
        os._exit(7)
    time.sleep(60)
t = tj.ones(3)
dist.all_reduce(t)
print("rank", dist.get_rank(), "finished an all_reduce a rank never joined", flush=True)
