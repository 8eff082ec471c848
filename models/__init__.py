"""Tollgate model zoo: architectures, datasets, training and manifest loading."""
