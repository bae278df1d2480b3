"""keep_freed_memory: freed blocks are reused without page faults, counted by the kernel.

Each measurement runs in a child process: the settings hold for the whole process.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from keras_transformers import host_memory

ON_GLIBC = platform.libc_ver()[0] == "glibc"

# Allocates, touches and frees a block three times in the main thread and three times in a new
# thread, and prints the minor page faults of the second and third rounds (the first one maps
# the memory either way). 96 MiB is above glibc's largest mmap threshold (32 MiB) and a thread
# arena's heap (64 MiB): the sizes that are mapped afresh by default.
CHILD = """
import ctypes, json, resource, sys, threading
from keras_transformers.host_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 96 << 20
faults = {}

def rounds(where):
    counts = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults[where] = sum(counts[1:])

rounds("main")
thread = threading.Thread(target=rounds, args=("thread",))
thread.start()
thread.join()
print(json.dumps({"applied": applied, "faults": faults, "pages": 2 * size // 4096}))
"""


def _child(mode):
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, "GLIBC_TUNABLES": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_glibc_version_matches_platform():
    name, version = platform.libc_ver()
    assert host_memory.glibc_version() == (version if name == "glibc" else None)


@pytest.mark.skipif(not ON_GLIBC, reason="mallopt is glibc's")
def test_freed_blocks_are_reused_without_page_faults():
    default, keep = _child("default"), _child("keep")
    assert keep["applied"] is True
    for where in ("main", "thread"):
        # Reused memory is already mapped: almost no faults where the default maps it again.
        assert keep["faults"][where] < 0.01 * keep["pages"], (where, keep)
        assert default["faults"][where] > 10 * max(keep["faults"][where], 1), (where, default, keep)


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(host_memory.os, "confstr", lambda name: None)
    assert host_memory.glibc_version() is None
    assert host_memory.keep_freed_memory() is False
