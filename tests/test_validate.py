"""pl_pruning.validate: every argument check accepts what it names, refuses the rest with one
line naming the argument, the bad value and what is allowed, and never takes a bool for a
number."""

import math

import pytest

from pl_pruning.errors import PlPruningError
from pl_pruning.validate import (
    check_bool,
    check_choice,
    check_fraction,
    check_int,
    check_names,
    check_number,
    is_int,
    is_number,
)


def test_bool_is_neither_an_integer_nor_a_number():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(0.5) and not is_number(False)
    assert not is_number(math.nan) and not is_number(math.inf) and not is_number("1")


def test_check_int_returns_the_integer_or_names_what_is_allowed():
    assert check_int("epochs", 3, 1) == 3 and type(check_int("epochs", 3, 1)) is int
    assert check_int("seed", -7) == -7
    assert check_int("max_steps", None, 1, optional=True) is None
    for value, message in [(0, "epochs must be an integer >= 1, got 0"),
                           (True, "epochs must be an integer >= 1, got True"),
                           (2.0, "epochs must be an integer >= 1, got 2.0"),
                           (None, "epochs must be an integer >= 1, got None")]:
        with pytest.raises(PlPruningError) as err:
            check_int("epochs", value, 1)
        assert str(err.value) == message
    with pytest.raises(PlPruningError, match=r"^max_steps must be an integer >= 1 or None, got 'a'$"):
        check_int("max_steps", "a", 1, optional=True)


@pytest.mark.parametrize(("kwargs", "value", "allowed"), [
    (dict(low=0, high=1), 1.5, "in [0, 1]"),
    (dict(low=0, high=1, low_open=True, high_open=True), 0.0, "in (0, 1)"),
    (dict(low=0, high=1, low_open=True, high_open=True), 1, "in (0, 1)"),
    (dict(low=2), 1.5, ">= 2"),
    (dict(low=2, low_open=True), 2, "> 2"),
    (dict(high=5, high_open=True), 5, "< 5"),
    (dict(high=5), 6, "<= 5"),
    (dict(), math.nan, "a finite number"),
    (dict(low=0), True, ">= 0"),
])
def test_check_number_refuses_values_outside_its_interval(kwargs, value, allowed):
    with pytest.raises(PlPruningError) as err:
        check_number("x", value, **kwargs)
    assert str(err.value) == f"x must be {allowed}, got {value!r}"


def test_check_number_accepts_the_interval_and_returns_a_float():
    assert check_number("x", 1, 0, 1) == 1.0 and type(check_number("x", 1, 0, 1)) is float
    assert check_number("x", 0, 0, 1) == 0.0
    assert check_number("x", None, 0, optional=True) is None
    with pytest.raises(PlPruningError, match=r"^x must be >= 0 or None, got -1$"):
        check_number("x", -1, 0, optional=True)


def test_check_fraction_is_open_at_one_and_at_zero_unless_told():
    assert check_fraction("max_drop", 0.5) == 0.5
    assert check_fraction("freeze", 0, zero_ok=True) == 0.0
    for value in (0, 1, 1.5):
        with pytest.raises(PlPruningError, match=rf"^max_drop must be in \(0, 1\), got {value}$"):
            check_fraction("max_drop", value)
    with pytest.raises(PlPruningError, match=r"^freeze must be in \[0, 1\), got 1$"):
        check_fraction("freeze", 1, zero_ok=True)


def test_check_bool_and_check_choice():
    assert check_bool("recheck", False) is False
    for value in (1, "true", None):
        with pytest.raises(PlPruningError, match=rf"^recheck must be true or false, got {value!r}$"):
            check_bool("recheck", value)
    assert check_choice("mode", "min", ("min", "max")) == "min"
    with pytest.raises(PlPruningError, match=r"^unknown mode 'mid'; choose one of: min, max$"):
        check_choice("mode", "mid", ("min", "max"))


def test_check_names_takes_a_list_of_strings_only():
    assert check_names("layers", ("a", "b")) == ["a", "b"]
    assert check_names("layers", []) == []
    for value in ("conv1", ["a", 1], 3):
        with pytest.raises(PlPruningError, match=r"^layers must be a list of names, got "):
            check_names("layers", value)
    with pytest.raises(PlPruningError, match=r"^layers must not be empty$"):
        check_names("layers", [], allow_empty=False)
