"""Process-wide allocator settings for the ``datamap`` command (not applied on library import).

Analysing a run touches a lot of fresh memory once (1M examples x 20 epochs: ~1.5 GB). By
default Arrow allocates through mimalloc and NumPy asks the kernel for transparent huge pages
(``madvise(MADV_HUGEPAGE)``) on large arrays. Where the kernel then compacts memory on the fault
path (``transparent_hugepage/defrag`` = ``madvise``, common on VMs), those first touches cost
more system time than they save: measured on a 2-core VM, ``datamap analyze`` on 1M x 20 spent
3.7 s in the kernel with the defaults and 0.9-1.2 s with ordinary pages (wall 5.8 s -> 3.1-3.7 s
under load). So the command uses the system allocator for Arrow and plain pages for NumPy, unless
the user chose otherwise through ``ARROW_DEFAULT_MEMORY_POOL`` or ``NUMPY_MADVISE_HUGEPAGE``.
"""

from __future__ import annotations

import os

__all__ = ["prefer_plain_pages"]


def prefer_plain_pages() -> None:
    """Arrow: system allocator; NumPy: no huge-page advice (each unless set by the environment)."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    if "NUMPY_MADVISE_HUGEPAGE" not in os.environ:
        import numpy as np

        core = getattr(np, "_core", None) or getattr(np, "core", None)
        setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
        if setter is not None:
            setter(False)
