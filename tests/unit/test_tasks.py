"""The task bodies, called in-process: numbers in, numbers out, clear errors."""

from __future__ import annotations

import pytest

from routing_demo.tasks import add, mul, sub


@pytest.mark.parametrize(
    ("task", "args", "expected"),
    [(add, (2, 3), 5), (sub, (2, 3), -1), (mul, (2, 3), 6), (add, (0.5, 0.25), 0.75)],
)
def test_when_numbers_then_arithmetic(task, args, expected) -> None:
    assert task(*args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a", None), r"add\(\) takes numbers only: x='a' is str"),
        ((1, None), r"add\(\) takes numbers only: y=None is NoneType"),
        (("1", "2"), r"x='1' is str"),
        ((True, 1), r"x=True is bool"),
    ],
)
def test_when_not_numbers_then_type_error_names_the_argument(args, message) -> None:
    with pytest.raises(TypeError, match=message):
        add(*args)
