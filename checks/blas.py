"""One BLAS thread while the checks run.

numpy's and scipy's OpenBLAS start a thread per core and, after each matrix product, keep those
threads spinning for a while in case another comes. The checks make many small products (the face
descriptor's convolutions, least-squares fits, colour transforms) between MediaPipe and OpenCV
calls, so on 2 cores the spinning threads mostly take CPU from the work that follows. Measured with
``bench/checks_speed.py`` on the 771x1024 pair, 2 cores (median of 5): the whole warm check of a new
pair 676-695 ms wall and 890 ms CPU with OpenBLAS's default 2 threads, 654 ms and 718 ms with 1; the
same pair again 353-369 ms and 501-513 ms CPU, against 308 ms and 357 ms.

:func:`one_blas_thread` sets every loaded BLAS library to one thread for the duration and restores
what it found afterwards; runs that overlap in threads share one limit (the first to enter sets it,
the last to leave restores it). Without ``threadpoolctl`` it does nothing.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.Lock()
_active = 0
_limiter = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    global _active, _limiter
    with _LOCK:
        if _active == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # an optional speed-up, never a reason not to check
                threadpool_limits = None
            _limiter = threadpool_limits(limits=1, user_api="blas") if threadpool_limits else None
        _active += 1
    try:
        yield
    finally:
        with _LOCK:
            _active -= 1
            if _active == 0 and _limiter is not None:
                _limiter.restore_original_limits()
                _limiter = None
