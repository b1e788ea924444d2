"""Stop signals while a container exists: recorded, never raised; raised at once only
inside ``interruptible()``; the previous handlers come back afterwards."""

from __future__ import annotations

import os
import select
import signal

import pytest

from ci_integration.containers.signals import StopRequests
from ci_integration.errors import Interrupted


def test_signals_are_recorded_in_order_and_wake_a_select():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with StopRequests() as stops:
        assert stops.first is None
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: recorded, nothing raised
        ready, _, _ = select.select([stops.fileno()], [], [], 5)
        assert ready == [stops.fileno()]
        assert stops.first == signal.SIGTERM
        assert stops.received == [signal.SIGTERM, signal.SIGINT]
        with pytest.raises(Interrupted) as raised:
            stops.raise_if_stopped()
        assert raised.value.exit_code == 143
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_interruptible_raises_at_once_and_only_inside():
    with StopRequests() as stops:
        with pytest.raises(Interrupted) as raised, stops.interruptible():
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        assert raised.value.exit_code == 128 + signal.SIGHUP
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Interrupted), stops.interruptible():
            pass  # a signal already received raises on entry


def test_other_signals_are_not_stop_requests():
    previous = signal.signal(signal.SIGUSR1, lambda *args: None)
    try:
        with StopRequests() as stops:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stops.first is None
    finally:
        signal.signal(signal.SIGUSR1, previous)
