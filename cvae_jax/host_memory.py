"""Keep freed host memory for reuse (glibc), so that CPU steps do not page-fault.

XLA:CPU gives each run of a compiled step one block for all its temporaries
(185 MB for the paper-size train step). glibc serves a block that large from
a fresh mmap, and returns it to the system when it is freed, so every step
touches 185 MB of new pages: 50,000 page faults and about a fifth of the
step's CPU time on the development machine (README, Performance). With one
malloc arena, no mmap and no trimming, the block comes from the heap and the
next step reuses it; the process keeps its peak memory until it exits.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
  """Sets glibc's malloc to reuse freed memory; True if it did (glibc only).

  Call it before JAX starts its threads (the first use of a device): a thread
  keeps the arena it had.
  """
  name = ctypes.util.find_library("c")
  libc = ctypes.CDLL(name) if name else None
  if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
    return False
  return all(libc.mallopt(option, value) == 1 for option, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**30)))
