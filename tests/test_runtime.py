"""effdet.runtime.keep_freed_memory: freed tensors are reused without page faults (in subprocesses,
so that the test process keeps glibc's defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Allocates, touches and frees a 96 MiB tensor (above glibc's largest mmap threshold) in several
# rounds and reports the minor page faults of the rounds once the heap has settled.
PROBE = """
import json, resource, sys
import torch
from effdet.runtime import freed_memory_kept, keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
def churn():
    x = torch.empty(24 * 2 ** 20)  # 96 MiB
    x.fill_(1.0)
    del x
churn(); churn(); churn()  # the heap settles in the first rounds
faults = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    churn()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# the median of the last 7 rounds: with the setting, the first few rounds may still map fresh
# pages (seen: up to 5 after the warm-up, varying from process to process), then none do
print(json.dumps({"applied": applied, "kept": freed_memory_kept(), "faults": sorted(faults[-7:])[3]}))
"""


def probe(mode: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings exist on Linux only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    default, kept = probe("off"), probe("on")
    if not kept["applied"]:
        pytest.skip("this C library does not take glibc's mallopt settings")
    assert kept["kept"] and not default["kept"]
    pages = 96 * 2 ** 20 // 4096  # what re-mapping the tensor costs
    # median round: glibc's defaults map fresh pages each time; kept, the same memory is reused
    # (a round may still grow the heap when a small allocation took part of the freed block)
    assert default["faults"] > pages // 2
    assert kept["faults"] < pages // 20


def test_environment_switch_turns_it_off() -> None:
    result = probe("on", EFFDET_KEEP_FREED_MEMORY="0")
    assert result == {"applied": False, "kept": False, "faults": result["faults"]}
