"""The docstring examples of the lowrank core modules run."""

import doctest
import importlib

import pytest

MODULES = ["lowrank.projection", "lowrank.adam", "lowrank.quant8", "lowrank.dct", "lowrank.apollo", "lowrank.groups"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
