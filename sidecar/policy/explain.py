"""The effective policy, for people: JSON for ``/admin/policy``, text for ``sidecar explain``.

Every value shown is the effective one (defaults filled in); secrets are
redacted, and so is the whole user info (``user:password@``) of every URL.
"""

from __future__ import annotations

from sidecar.policy.model import (
    REDACTED,
    Breaker,
    PolicySet,
    RateLimit,
    Retry,
    Route,
    StateBackend,
    Target,
    Upstream,
)
from sidecar.policy.redaction import redact_url
from sidecar.policy.units import format_duration as dur
from sidecar.typedefs import JSON


def upstream_json(upstream: Upstream) -> JSON:
    return {
        "url": redact_url(upstream.url),
        "format": upstream.format,
        "auth": {"header": upstream.auth.header, "value": REDACTED} if upstream.auth else None,
        "client_auth": upstream.client_auth,
        "forward_headers": sorted(upstream.forward_headers),
        "connect_timeout": dur(upstream.connect_timeout),
        "pool": {"max_connections": upstream.max_connections},
        "capabilities": {"prefill": upstream.prefill, "tools": upstream.tools},
        "rate_limit": _rate_limit_json(upstream.rate_limit),
    }


def _rate_limit_json(limit: RateLimit | None) -> JSON | None:
    if limit is None:
        return None
    return {
        "requests_per_minute": limit.requests_per_minute,
        "tokens_per_minute": limit.tokens_per_minute,
        "burst": limit.burst,
        "key": limit.key,
    }


def state_json(state: StateBackend) -> JSON:
    return {
        "backend": state.backend,
        "url": _redis_url(state),
        "prefix": state.prefix,
        "timeout": dur(state.timeout),
    }


def _redis_url(state: StateBackend) -> str | None:
    return redact_url(state.url.reveal()) if state.url is not None else None


def route_json(route: Route) -> JSON:
    match = route.match
    return {
        "name": route.name,
        "match": {
            "prefix" if match.prefix else "path": match.path,
            "methods": sorted(match.methods) if match.methods else "any",
            "model": match.model,
            "header": {"name": match.header[0], "value": match.header[1]} if match.header else None,
        },
        "validate": {
            "max_body": route.validate.max_body,
            "max_prompt_tokens": route.validate.max_prompt_tokens,
        },
        "deadline": dur(route.deadline),
        "timeouts": {
            "connect": dur(route.timeouts.connect)
            if route.timeouts.connect is not None
            else "per upstream",
            "first_byte": dur(route.timeouts.first_byte),
            "idle": dur(route.timeouts.idle),
        },
        "retry": _retry_json(route.retry),
        "breaker": _breaker_json(route.breaker),
        "fallback": [_target_json(target) for target in route.fallback],
        **_balance_json(route),
        "translate": {
            "max_tokens": route.translate.max_tokens,
            "unsupported": route.translate.unsupported,
        },
        "continuation": {
            "enabled": route.continuation.enabled,
            "target": route.continuation.target,
        },
        "access": {
            "keys": [REDACTED for _ in route.access.keys],
            "localhost_only": route.access.localhost_only,
        },
        "limits": {"max_in_flight": route.limits.max_in_flight},
        "rate_limit": _rate_limit_json(route.rate_limit),
        "cache": {
            "enabled": route.cache.enabled,
            "when": route.cache.when,
            "ttl": dur(route.cache.ttl),
            "max_entries": route.cache.max_entries,
            "max_entry_size": route.cache.max_entry_size,
        },
    }


def policy_json(policy: PolicySet) -> JSON:
    return {
        "hash": policy.hash,
        "files": list(policy.files),
        "upstreams": {name: upstream_json(up) for name, up in policy.upstreams.items()},
        "routes": [route_json(route) for route in policy.routes],
        "state": state_json(policy.state),
    }


def explain(policy: PolicySet) -> str:
    """Per route, the pipeline in execution order with every effective value."""
    lines = [f"policy {policy.hash} from {', '.join(policy.files)}"]
    state = policy.state
    if state.backend == "redis":
        lines.append(
            f"state: shared through Redis {_redis_url(state)} (prefix {state.prefix!r}, "
            f"{dur(state.timeout)} per call; local state while it does not answer)"
        )
    else:
        lines.append("state: in this process (memory)")
    lines.append("")
    for number, route in enumerate(policy.routes, start=1):
        match = route.match
        methods = ",".join(sorted(match.methods)) if match.methods else "any method"
        where = f"{'prefix ' if match.prefix else ''}{match.path} ({methods}"
        if match.model:
            where += f", model {match.model}"
        if match.header:
            where += f", header {match.header[0]}: {match.header[1]}"
        lines.append(f"route {number} {route.name!r}: {where})")
        step = iter(range(1, 20))  # the steps in the order a request meets them
        lines.append(
            f"  {next(step)}. in flight  at most {route.limits.max_in_flight} at once "
            "(503 + Retry-After beyond)"
        )
        if route.access.keys or route.access.localhost_only:
            who = f"{len(route.access.keys)} client key(s)" if route.access.keys else "any key"
            local = ", loopback clients only" if route.access.localhost_only else ""
            lines.append(f"  {next(step)}. access     {who}{local} (401 otherwise)")
        tokens = route.validate.max_prompt_tokens
        lines.append(
            f"  {next(step)}. validate   body <= {route.validate.max_body} bytes"
            + (f", prompt <= {tokens} tokens (chars/4)" if tokens else "")
        )
        if route.rate_limit is not None:
            lines.append(
                f"  {next(step)}. rate limit {route.rate_limit.describe(burst=True)} (429 beyond)"
            )
        if route.cache.enabled:
            cache = route.cache
            lines.append(
                f"  {next(step)}. cache      {cache.when} requests, ttl {dur(cache.ttl)}, "
                f"{cache.max_entries} entries of <= {cache.max_entry_size} bytes"
            )
        lines.append(f"  {next(step)}. deadline   {dur(route.deadline)} for the whole chain")
        lines.append(f"  {next(step)}. fallback   {len(route.fallback)} target(s), in order:")
        tier_of = {id(target): tier for tier in route.tiers for target in tier.targets}
        for index, target in enumerate(route.fallback, start=1):
            tier = tier_of.get(id(target))
            if tier is not None and tier.targets[0] is target:
                lines.append(
                    f"     tier ({tier.strategy}): the next {len(tier.targets)} are one step, "
                    "ordered per request, all tried before the step after"
                )
            lines.extend(_target_lines(route, index, target))
        if route.prefer:
            lines.append(
                f"     prefer: a request may name {', '.join(route.prefer)} to be tried first "
                "(x-sidecar-prefer / preferred_provider)"
            )
        else:
            lines.append("     prefer: off (a request naming a provider gets 400)")
        if route.hedge is not None:
            lines.append(
                f"     hedge: no first byte after {dur(route.hedge.after)} → one extra attempt "
                "on the next target, first answer wins (retry budget permitting)"
            )
        if route.continuation.enabled:
            lines.append(
                f"  {next(step)}. continuation  a stream broken after its first token is finished "
                f"on the {route.continuation.target} target (prefill where declared, else restart)"
            )
        lines.append("")
    lines.append("No route matches → 404 in the client's wire format, no upstream call.")
    return "\n".join(lines)


def _target_lines(route: Route, index: int, target: Target) -> list[str]:
    up = target.upstream
    retry, breaker, timeouts = route.retry, route.breaker, route.timeouts
    model = _model_text(target)
    on = ", ".join(sorted(str(condition) for condition in retry.on))
    backoff = retry.backoff
    after = retry.retry_after
    connect = timeouts.connect if timeouts.connect is not None else up.connect_timeout
    return [
        f"     {index}) {up.name} ({up.format}, {redact_url(up.url)}){model}",
        f"        retry      {retry.attempts} attempt(s) on {on}",
        f"                   backoff {dur(backoff.base)} x{backoff.multiplier:g} up to "
        f"{dur(backoff.max)}, jitter {backoff.jitter}",
        "                   Retry-After "
        + (f"honored up to {dur(after.max_wait)}" if after.honor else "ignored"),
        f"                   budget {retry.budget.ratio:.0%} of requests, "
        f"min {retry.budget.min_per_second:g}/s",
        f"        breaker    {_breaker_text(breaker)}",
        f"        timeouts   connect {dur(connect)}, first byte {dur(timeouts.first_byte)}, "
        f"idle {dur(timeouts.idle)}",
        f"        auth       {_auth_text(route, up)}",
        *(
            [f"        forwards   {', '.join(sorted(up.forward_headers))} (dropped by default)"]
            if up.forward_headers
            else []
        ),
        *(
            [
                f"        limit      {up.rate_limit.describe(burst=True)} "
                "(skipped to the next beyond)"
            ]
            if up.rate_limit is not None
            else []
        ),
    ]


def _auth_text(route: Route, up: Upstream) -> str:
    own = f"{up.auth.header}: {REDACTED}" if up.auth else "none"
    if up.client_auth == "drop":
        return f"{own}; client credentials dropped"
    if route.access.keys:
        return f"{own}; client credentials dropped (they hold the route's access keys)"
    return f"{own}; client credentials passed (client_auth: pass, same wire format only)"


def _model_text(target: Target) -> str:
    if target.when == "context_length_exceeded":
        return ", only after a context-length rejection" + _model_only(target)
    return _model_only(target)


def _model_only(target: Target) -> str:
    if target.model:
        return f", model → {target.model}"
    if target.model_map:
        pairs = ", ".join(f"{pattern} → {model}" for pattern, model in target.model_map)
        return f", model map: {pairs}"
    return ""


def _breaker_text(breaker: Breaker) -> str:
    if not breaker.enabled:
        return "off"
    if breaker.window is not None:
        window = breaker.window
        trip = (
            f"opens at {window.failure_rate:.0%} failures over {dur(window.size)} "
            f"(min {window.min_calls} calls)"
        )
    else:
        trip = f"opens after {breaker.consecutive_failures} consecutive failures"
    return (
        f"per {breaker.key.replace('_', '+')}: {trip}, open {dur(breaker.open_for)}, "
        f"{breaker.half_open_probes} half-open probe(s)"
    )


def _retry_json(retry: Retry) -> JSON:
    return {
        "attempts": retry.attempts,
        "on": sorted(str(condition) for condition in retry.on),
        "backoff": {
            "base": dur(retry.backoff.base),
            "max": dur(retry.backoff.max),
            "multiplier": retry.backoff.multiplier,
            "jitter": retry.backoff.jitter,
        },
        "retry_after": {
            "honor": retry.retry_after.honor,
            "max_wait": dur(retry.retry_after.max_wait),
        },
        "budget": {"ratio": retry.budget.ratio, "min_per_second": retry.budget.min_per_second},
    }


def _breaker_json(breaker: Breaker) -> JSON:
    window = breaker.window
    return {
        "enabled": breaker.enabled,
        "consecutive_failures": breaker.consecutive_failures,
        "window": {
            "size": dur(window.size),
            "min_calls": window.min_calls,
            "failure_rate": window.failure_rate,
        }
        if window
        else None,
        "open_for": dur(breaker.open_for),
        "half_open": {"probes": breaker.half_open_probes},
        "key": breaker.key,
    }


def _target_json(target: Target) -> JSON:
    return {
        "upstream": target.upstream.name,
        "model": target.model,
        "model_map": dict(target.model_map) or None,
        "when": target.when,
    }


def _balance_json(route: Route) -> JSON:
    """Tiers and hedge, only when the route has them."""
    shown: JSON = {}
    if route.tiers:
        shown["tiers"] = [
            {
                "strategy": tier.strategy,
                "targets": [
                    {"upstream": target.upstream.name, "weight": target.weight}
                    for target in tier.targets
                ],
            }
            for tier in route.tiers
        ]
    if route.hedge is not None:
        shown["hedge"] = {"after": dur(route.hedge.after)}
    return shown
