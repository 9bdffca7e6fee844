"""The in-process engine's worker processes: the same results in the same order as threads, shared arguments shipped
once per worker, and a user's error raised in a worker arriving whole."""

from __future__ import annotations

import os

import pytest

from data_preprocess.engine import LocalEngine
from instance_nerfacto.core.errors import InputError


def scaled_pid(x: int, scale: int) -> tuple:
    return x * scale, os.getpid()


def refuse_seven(x: int) -> int:
    if x == 7:
        raise InputError("frame 7 has no masks", "/data/masks/frame_00007.png", "add its mask PNG")
    return x


def test_processes_keep_submission_order_and_ship_common_arguments() -> None:
    items = [(x,) for x in range(40)]
    threads = list(LocalEngine(2).map(scaled_pid, items, common={"scale": 3}, chunk=3))
    procs = list(LocalEngine(2).map(scaled_pid, items, common={"scale": 3}, chunk=3, processes=True))
    assert [r for r, _ in procs] == [r for r, _ in threads] == [3 * x for x in range(40)]
    assert {p for _, p in threads} == {os.getpid()}  # threads: this process
    assert os.getpid() not in {p for _, p in procs}  # processes: never this one
    few = list(LocalEngine(2).map(scaled_pid, items[:7], common={"scale": 3}, processes=True))  # 7 < 4 per worker
    assert few == [(3 * x, os.getpid()) for x in range(7)]  # on threads: starting processes would cost more


def test_an_input_error_in_a_worker_process_arrives_whole() -> None:
    with pytest.raises(InputError) as err:
        list(LocalEngine(2).map(refuse_seven, [(x,) for x in range(10)], processes=True))
    assert (err.value.what, str(err.value.path), err.value.fix) == ("frame 7 has no masks",
                                                                   "/data/masks/frame_00007.png", "add its mask PNG")
