"""Shared doctest namespace: docstring examples may use torch, nn, np and ls without imports."""

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    import landscape as ls
    from landscape import gauss_newton, hessian

    doctest_namespace.update(
        {
            "torch": torch,
            "nn": nn,
            "np": np,
            "ls": ls,
            "hessian": hessian,
            "gauss_newton": gauss_newton,
        }
    )


_FRAMEWORK_RESULTS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    """Remember the outcome of every test marked ``frameworks``."""
    if "frameworks" in report.keywords and (report.when == "call" or report.skipped):
        _FRAMEWORK_RESULTS.append((report.nodeid, report.outcome))


def pytest_terminal_summary(terminalreporter):
    """List the real-framework tests and the framework versions, so a CI log shows them."""
    if not _FRAMEWORK_RESULTS:
        return
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("transformers", "accelerate", "lightning"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} not installed")
    terminalreporter.section("real frameworks (" + ", ".join(versions) + ")")
    for nodeid, outcome in _FRAMEWORK_RESULTS:
        terminalreporter.write_line(f"{outcome.upper():8} {nodeid}")
