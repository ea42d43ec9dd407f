"""composer.sampling.memo: one call per key inside an evaluation scope, nothing shared outside it."""

from __future__ import annotations

import torch

from composer.sampling.memo import evaluation, shared


def counter():
    calls = []

    def fn():
        calls.append(1)
        return torch.ones(3) * len(calls)

    return calls, fn


def test_shared_within_a_scope_only_and_keyed_by_identity_version_and_grad_mode():
    calls, fn = counter()
    x, y = torch.zeros(3), torch.zeros(3)
    assert shared(("k", x), fn) is not shared(("k", x), fn)  # no scope: every call computes
    assert len(calls) == 2
    with evaluation():
        a = shared(("k", x), fn)
        assert shared(("k", x), fn) is a
        assert shared(("k", y), fn) is not a  # an equal but different tensor is another input
        x.add_(1.0)  # an in-place change makes x a new input
        b = shared(("k", x), fn)
        assert b is not a
        with torch.no_grad():
            assert shared(("k", x), fn) is not b
        assert shared(("other", x), fn) is not b
    assert len(calls) == 7
    with evaluation():  # a new scope starts empty
        assert shared(("k", x), fn) is not b
    assert len(calls) == 8


def test_scopes_nest_and_restore():
    calls, fn = counter()
    x = torch.zeros(1)
    with evaluation():
        a = shared(("k", x, 0.5), fn)
        with evaluation():
            assert shared(("k", x, 0.5), fn) is not a
        assert shared(("k", x, 0.5), fn) is a
    assert len(calls) == 2
