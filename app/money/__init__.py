"""Exact money: price components and their math, billing periods. A leaf package."""
