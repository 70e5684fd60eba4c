"""Edges: Starlette lives here (and in app.py) only."""
