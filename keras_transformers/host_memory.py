"""Host memory for training on a CPU: make glibc's malloc keep freed memory for reuse.

On a CPU, XLA (the JAX backend) allocates a step's temporaries afresh at every execution and
PyTorch allocates each large tensor anew (a language model's logits: 32 MiB for 8 x 128 tokens
over a vocabulary of 8192). glibc's malloc serves a block above its mmap threshold (at most
32 MiB) straight from the kernel and unmaps it on free, so every step touches that memory for
the first time again: one page fault per 4 KiB page, each mapped and zero-filled by the kernel.
A thread other than the main one allocates from an arena of its own, whose heaps hold at most
64 MiB, so larger blocks are mapped afresh too. `keep_freed_memory` turns both off for the
process, so a step reuses the memory the previous step freed.
"""

import ctypes
import os

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest trim threshold mallopt takes (an int): the heap is returned to the kernel only
# when 2 GiB at its top are free.
_TRIM_THRESHOLD = 2**31 - 1


def glibc_version():
    """The version of the process' glibc as a string (`"2.36"`), or None for another C library
    (macOS, Windows, musl)."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    if not name or not name.startswith("glibc "):
        return None
    return name.split(" ", 1)[1]


def keep_freed_memory():
    """Makes glibc's malloc keep freed memory in the process for the next allocation.

    Three `mallopt` settings, for the whole process: large blocks come from the heap instead of
    their own kernel mappings (`M_MMAP_MAX=0`); the heap is not shrunk while less than 2 GiB at
    its top is free (`M_TRIM_THRESHOLD`); and every thread allocates from the main heap
    (`M_ARENA_MAX=1`), because a thread's own arena maps any block over 64 MiB afresh. A CPU
    training step then takes no page faults after the first steps, where it took tens of
    thousands (see the README's CPU performance section: a JAX GPT-2 training step on 2 cores
    ran 1.2x faster). Unlike `GLIBC_TUNABLES`, which glibc reads when the process starts, this
    works from Python.

    The cost: the process keeps its peak resident memory until it ends, instead of returning
    freed blocks to the system. Call it first thing, before the backend runs anything: a thread
    that has already allocated keeps its arena. It changes no result. TensorFlow reuses its own
    buffers in training and gains little from it.

    Returns:
        True where the settings were applied (Linux with glibc), False where the C library is
        not glibc; then nothing changes.

    Example:

    >>> from keras_transformers.host_memory import keep_freed_memory
    >>> applied = keep_freed_memory()  # False off glibc
    """
    if glibc_version() is None:
        return False
    # The process' own symbols: the libc it runs on (no search for a library file).
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
