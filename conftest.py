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
