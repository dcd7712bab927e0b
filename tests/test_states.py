"""The transition table is the one authority on what may follow what."""

from __future__ import annotations

import itertools

import pytest

from hive_actors import TERMINAL, TRANSITIONS, InvalidTransition, Status
from hive_actors._states import check_transition


def test_every_state_is_in_the_table_and_terminal_states_are_dead_ends() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert {str(s) for s in TERMINAL} == {"completed", "failed", "terminated"}
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
    for state in set(Status) - TERMINAL:
        # terminate works from any live state: directly, or via stopping (agent running)
        direct = Status.TERMINATED in TRANSITIONS[state]
        via_stopping = Status.STOPPING in TRANSITIONS[state]
        assert direct or via_stopping, state
        assert Status.FAILED in TRANSITIONS[state]


@pytest.mark.parametrize(("current", "target"), list(itertools.product(Status, Status)))
def test_check_transition_follows_the_table(current: Status, target: Status) -> None:
    if target in TRANSITIONS[current]:
        check_transition("s", current, target)
    else:
        with pytest.raises(InvalidTransition) as raised:
            check_transition("s", current, target)
        assert f"from '{current}' to '{target}'" in str(raised.value)
        assert (raised.value.current, raised.value.target) == (str(current), str(target))
