"""Helpers shared by the tests (on the path through pyproject's `pythonpath`)."""
