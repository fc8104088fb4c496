"""An example service that talks to LLMs through the sidecar, and nothing else.

It writes a title, a short script outline and metadata for a topic: three chat
completion calls with the official ``openai`` SDK, the outline one streaming.
It runs as a web service (``GET /health``, ``POST /generate``) or once from the
command line (``python -m examples.app "a topic"``).

What this code deliberately does NOT contain: retries, backoff, timeouts,
fallback to another provider or model, circuit breakers, stream repair. The
client is built with ``max_retries=0`` and the SDK's default timeout, and every
call is made exactly once. All of that is the sidecar's job, declared in its
policy (``policies/default.yaml`` under ``make run``): the app only points
``base_url`` at it. Whatever the sidecar could not save arrives as one ordinary
SDK error, which the app reports as it is.
"""
