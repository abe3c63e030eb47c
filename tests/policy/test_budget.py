"""File and edit budgets: checked and consumed atomically; a denied reservation costs nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bcce.errors import ConfigError
from bcce.policy.budget import Budget, BudgetUsage


def test_reservation_within_budget_is_allowed_and_consumed() -> None:
    budget = Budget(max_files=2, max_edits=2)
    decision = budget.reserve(files=["a"], edits=1)
    assert (decision.allowed, decision.rule) == (True, "budget.ok")
    assert budget.usage() == BudgetUsage(files=1, max_files=2, edits=1, max_edits=2)


def test_a_file_already_counted_is_free() -> None:
    budget = Budget(max_files=1, max_edits=0)
    budget.reserve(files=["a"])
    assert budget.reserve(files=["a"]).allowed
    assert budget.usage().files == 1


def test_files_beyond_the_budget_are_denied() -> None:
    budget = Budget(max_files=1, max_edits=0)
    budget.reserve(files=["a"])
    assert budget.reserve(files=["b"]).rule == "budget.max_files"


def test_edits_beyond_the_budget_are_denied() -> None:
    budget = Budget(max_files=5, max_edits=2)
    budget.reserve(edits=2)
    assert budget.reserve(edits=1).rule == "budget.max_edits"


def test_zero_edits_denies_every_edit() -> None:
    assert Budget(max_files=5, max_edits=0).reserve(files=["a"], edits=1).rule == (
        "budget.max_edits"
    )


def test_a_denied_reservation_consumes_nothing() -> None:
    budget = Budget(max_files=5, max_edits=2)
    budget.reserve(edits=1)
    assert not budget.reserve(files=["a", "b"], edits=2).allowed
    assert budget.usage() == BudgetUsage(files=0, max_files=5, edits=1, max_edits=2)
    assert budget.files == frozenset()


def test_a_reservation_larger_than_what_is_left_is_denied_whole() -> None:
    budget = Budget(max_files=3, max_edits=0)
    budget.reserve(files=["a", "b"])
    assert not budget.reserve(files=["c", "d"]).allowed
    assert budget.files == {"a", "b"}


@pytest.mark.parametrize(("max_files", "max_edits"), [(-1, 0), (0, -1), (True, 0), (0, 1.5)])
def test_negative_or_non_integer_limits_are_config_errors(
    max_files: object, max_edits: object
) -> None:
    with pytest.raises(ConfigError):
        Budget(max_files, max_edits)  # type: ignore[arg-type]


def test_concurrent_reservations_never_overshoot_the_file_budget() -> None:
    budget = Budget(max_files=10, max_edits=0)
    start = threading.Barrier(32)

    def read(index: int) -> bool:
        start.wait()
        return budget.reserve(files=[f"file-{index}"]).allowed

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(read, range(32)))
    assert results.count(True) == 10
    assert budget.usage().files == 10


def test_concurrent_reservations_never_overshoot_the_edit_budget() -> None:
    budget = Budget(max_files=1, max_edits=7)
    start = threading.Barrier(32)

    def edit(_: int) -> bool:
        start.wait()
        return budget.reserve(files=["same"], edits=1).allowed

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(edit, range(32)))
    assert results.count(True) == 7
    assert budget.usage().edits == 7
