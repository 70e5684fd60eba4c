"""Backends: the only package that imports redis. ``base`` is what the rest may use."""
