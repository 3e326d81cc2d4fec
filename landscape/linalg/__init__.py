"""Spectral algorithms on any symmetric LinearOperator: eigenvalues, traces, densities."""
