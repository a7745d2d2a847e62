"""ByteBudget: the bound on what the processor's threads hold at once."""

import threading
import time

from facepipe.budget import ByteBudget


def test_reservations_wait_for_room_and_are_granted_in_order() -> None:
    budget, stop, granted = ByteBudget(100), threading.Event(), []
    assert budget.acquire(80, stop)

    def take(name: str, size: int) -> None:
        assert budget.acquire(size, stop)
        granted.append(name)

    first = threading.Thread(target=take, args=("first-50", 50))
    first.start()
    while not budget._waiting:  # first-50 waits for room
        time.sleep(0.01)
    second = threading.Thread(target=take, args=("second-10", 10))
    second.start()
    time.sleep(0.3)
    assert granted == [] and budget.used == 80, "10 bytes would fit, but they queue behind the 50 that came first"
    budget.release(80)
    first.join(5)
    second.join(5)
    assert granted == ["first-50", "second-10"] and budget.used == 60


def test_a_reservation_larger_than_the_budget_runs_alone() -> None:
    budget, stop = ByteBudget(100), threading.Event()
    assert budget.acquire(500, stop) and budget.used == 500
    waiter = threading.Thread(target=budget.acquire, args=(1, stop))
    waiter.start()
    time.sleep(0.3)
    assert budget.used == 500
    budget.release(500)
    waiter.join(5)
    assert budget.used == 1


def test_stop_ends_a_wait_without_reserving() -> None:
    budget, stop = ByteBudget(10), threading.Event()
    assert budget.acquire(10, stop)
    threading.Timer(0.2, stop.set).start()
    assert not budget.acquire(5, stop)
    assert budget.used == 10 and not budget._waiting
