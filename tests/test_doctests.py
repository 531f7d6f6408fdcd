"""Every example in the package's docstrings runs and gives what it shows."""

import doctest
import importlib
import pkgutil

import pytest

import jsqa_sb

MODULES = sorted(info.name for info in pkgutil.walk_packages(jsqa_sb.__path__, prefix="jsqa_sb."))


def test_the_package_modules_are_found():
    assert {"jsqa_sb.data.pairs", "jsqa_sb.serving.batch_scoring", "jsqa_sb.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
