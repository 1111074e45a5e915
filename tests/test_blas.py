"""checks/blas.py: one BLAS thread while the checks run, the process's own setting restored after."""

from __future__ import annotations

import sys
import threading

import numpy as np
import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS too)
from threadpoolctl import threadpool_info, threadpool_limits

from fixloop.checks.blas import one_blas_thread
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests.conftest import photo


def blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_one_thread_inside_and_the_original_setting_after():
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and max(before) == 2
        with one_blas_thread():
            assert set(blas_threads()) == {1}
            np.ones((300, 300), np.float32) @ np.ones((300, 300), np.float32)
        assert blas_threads() == before


def test_overlapping_runs_share_one_limit_and_the_last_restores_it():
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def first():
            with one_blas_thread():
                first_in.set()
                second_in.wait(10)
            first_out.set()

        def second():
            first_in.wait(10)
            with one_blas_thread():
                second_in.set()
                first_out.wait(10)
                seen["after the first left"] = blas_threads()

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert set(seen["after the first left"]) == {1}
        assert blas_threads() == before


def test_without_threadpoolctl_the_checks_still_run(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    with one_blas_thread():
        assert np.linalg.norm(np.ones(4)) == 2.0


def test_a_check_run_leaves_the_process_setting_as_it_found_it():
    image = photo("gen_clean_01.jpg")
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        report = run_checks(CheckContext.from_arrays(image, source=image), names=["exposure_drift", "identity_drift"])
        assert [run.status for run in report.checks] and all(run.status != "error" for run in report.checks)
        assert blas_threads() == before
