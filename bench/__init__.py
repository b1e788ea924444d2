"""Benchmarks against what users do today; ``python -m bench`` runs them all."""
