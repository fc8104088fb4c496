"""Runnable examples: policies (``examples/policies/``) and an app (``examples/app/``)."""
