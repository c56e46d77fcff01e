"""Counting calls: ``calls = count_calls(monkeypatch, module, "name")`` replaces ``module.name``
by a wrapper that appends each call's positional arguments to ``calls`` and calls the original."""

from __future__ import annotations


def count_calls(monkeypatch, owner, name: str) -> list:
    calls: list = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls
