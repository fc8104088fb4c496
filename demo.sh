#!/usr/bin/env bash
# demo.sh — the llm-sidecar walkthrough: nine scenarios, each narrated and checked.
#
#   ./demo.sh            against a running local stack (`make run` in another terminal)
#   ./demo.sh --start    starts the local stack itself (on a copy of policies/), stops it after
#
# Elsewhere (compose): BASE_URL, ADMIN_URL, OPENAI_MOCK, ANTHROPIC_MOCK and, if the admin
# API needs one, ADMIN_TOKEN. Exits non-zero if any scenario did not behave as narrated.
set -uo pipefail
cd "$(dirname "$0")"

BASE_URL="${BASE_URL:-http://127.0.0.1:8080}"
ADMIN_URL="${ADMIN_URL:-http://127.0.0.1:8081}"
OPENAI_MOCK="${OPENAI_MOCK:-http://127.0.0.1:8001}"
ANTHROPIC_MOCK="${ANTHROPIC_MOCK:-http://127.0.0.1:8002}"
ADMIN_TOKEN="${ADMIN_TOKEN:-}"
PY=".venv/bin/python"
[ -x "$PY" ] || PY="python3"
WORK="$(mktemp -d)"
FAILED=0
STACK_PID=""
STACK_LOG=""
POLICY_FILE=""
POLICY_BACKUP=""

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; D=$'\e[2m'; N=$'\e[0m'; else B=""; G=""; R=""; D=""; N=""; fi

title() { printf '\n%s=== %s ===%s\n' "$B" "$1" "$N"; }
say() { printf '%s\n' "$*"; }
show() { printf '%s  %s%s\n' "$D" "$*" "$N"; }
pass() { printf '%s  ✓ %s%s\n' "$G" "$1" "$N"; }
fail() { printf '%s  ✗ %s%s\n' "$R" "$1" "$N"; FAILED=1; }
check() { # check "description" command...
  local what="$1"; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

cleanup() {
  if [ -n "$POLICY_BACKUP" ] && [ -f "$POLICY_BACKUP" ]; then cp "$POLICY_BACKUP" "$POLICY_FILE"; fi
  if [ -n "$STACK_PID" ]; then
    kill -INT "$STACK_PID" 2>/dev/null
    wait "$STACK_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

admin_get() { # admin_get PATH -> body on stdout
  if [ -n "$ADMIN_TOKEN" ]; then
    curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$ADMIN_URL$1"
  else
    curl -s "$ADMIN_URL$1"
  fi
}
json() { # json 'python expression on d' < JSON
  "$PY" -c "import json,sys; d=json.load(sys.stdin); print($1)"
}
mock_script() { curl -s -o /dev/null -X POST "$1/config/failures" -H 'content-type: application/json' -d "$2"; }
mock_clear() { curl -s -o /dev/null -X DELETE "$1/config/failures"; curl -s -o /dev/null -X POST "$1/stats/reset"; }
mock_calls() { curl -s "$1/stats" | json 'd["total"]'; }
BODY='{"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a haiku about retries."}]}'
chat() { # chat [extra curl args...]: POST to the sidecar; headers -> $WORK/h, body -> $WORK/b
  curl -s -o "$WORK/b" -D "$WORK/h" -w '%{http_code} %{time_total}' "$BASE_URL/v1/chat/completions" \
    -H 'content-type: application/json' -d "$BODY" "$@"
}
header() { grep -i "^$1:" "$WORK/h" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
log_lines() { # the sidecar's log lines for a request id (only when this script started the stack)
  [ -n "$STACK_LOG" ] && grep -F "$1" "$STACK_LOG" | grep -E 'sidecar\.(attempt|request)' | sed 's/^/    /'
}

start_stack() {
  if [ ! -x .venv/bin/python ]; then make install >/dev/null || exit 1; PY=".venv/bin/python"; fi
  mkdir -p "$WORK/policies"
  cp policies/*.yaml "$WORK/policies/"
  STACK_LOG="$WORK/stack.log"
  say "Starting the local stack (mocks on :8001/:8002, sidecar on :8080, admin on :8081)…"
  .venv/bin/python -m sidecar.devstack --policies "$WORK/policies" --chunk-ms 30 >"$STACK_LOG" 2>&1 &
  STACK_PID=$!
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -w '%{http_code}' "$ADMIN_URL/ready" 2>/dev/null | grep -q 200; then return 0; fi
    if ! kill -0 "$STACK_PID" 2>/dev/null; then cat "$STACK_LOG"; exit 1; fi
    sleep 0.2
  done
  say "The stack did not become ready:"; cat "$STACK_LOG"; exit 1
}

[ "${1:-}" = "--start" ] && start_stack
if ! curl -s -o /dev/null "$BASE_URL/health"; then
  say "No sidecar at $BASE_URL: run \`make run\` in another terminal, or ./demo.sh --start"
  exit 1
fi
mock_clear "$OPENAI_MOCK"; mock_clear "$ANTHROPIC_MOCK"
for key in $(admin_get /admin/breakers | json '" ".join(b["key"] for b in d["breakers"])'); do
  if [ -n "$ADMIN_TOKEN" ]; then AUTH=(-H "Authorization: Bearer $ADMIN_TOKEN"); else AUTH=(); fi
  curl -s -o /dev/null -X POST "${AUTH[@]}" "$ADMIN_URL/admin/breakers/$key/reset"
done

# 1 ----------------------------------------------------------------------------------------
title "1. Happy path"
say "The app's OpenAI SDK points at the sidecar; the sidecar calls OpenAI (here: the mock)."
read -r status _ < <(chat)
show "HTTP $status  x-sidecar-upstream: $(header x-sidecar-upstream)  x-sidecar-attempts: $(header x-sidecar-attempts)"
show "answer: $(json 'd["choices"][0]["message"]["content"][:70]' < "$WORK/b")…"
check "200 from openai in one attempt" \
  test "$status $(header x-sidecar-upstream) $(header x-sidecar-attempts)" = "200 openai 1"

# 2 ----------------------------------------------------------------------------------------
title "2. Timeout → retry with exponential backoff → success"
say "OpenAI times out once (a 504 after 300 ms), then fails once (503), then answers."
mock_script "$OPENAI_MOCK" '{"script": [{"fail": "timeout", "timeout_ms": 300}, {"fail": 503}]}'
read -r status took < <(chat)
rid=$(header x-request-id)
show "HTTP $status after ${took}s  attempts: $(header x-sidecar-attempts)  upstream: $(header x-sidecar-upstream)"
log_lines "$rid"
check "the app got a 200 after 3 attempts on openai" \
  test "$status $(header x-sidecar-attempts) $(header x-sidecar-upstream)" = "200 3 openai"

# 3 ----------------------------------------------------------------------------------------
title "3. Rate limit (429) → instant failover OpenAI → Anthropic (OpenAI SDK client)"
say "OpenAI answers 429 with Retry-After: 30 s — longer than max_wait, so no waiting: fail over."
mock_script "$OPENAI_MOCK" '{"script": [{"fail": 429, "retry_after": 30}]}'
"$PY" - "$BASE_URL" > "$WORK/sdk" <<'EOF'
import sys, time
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="app-placeholder", max_retries=0)
started = time.monotonic()
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o", messages=[{"role": "user", "content": "Write a haiku about retries."}]
)
completion = raw.parse()
print(raw.headers["x-sidecar-upstream"], raw.headers["x-sidecar-attempts"], completion.model,
      f"{time.monotonic() - started:.3f}", completion.object)
EOF
read -r upstream attempts model took object < "$WORK/sdk"
show "openai SDK got a $object from $upstream (model $model) after $attempts attempts in ${took}s"
check "answered by anthropic, translated to an OpenAI chat.completion, no 30 s wait" \
  test "$upstream $object $model" = "anthropic chat.completion claude-sonnet-4-6"

# 4 ----------------------------------------------------------------------------------------
title "4. Circuit breaker: opens after 5 failures, skips the provider, recovers"
say "OpenAI now fails every call (500). Each request tries it 3 times, then Anthropic answers."
mock_script "$OPENAI_MOCK" '{"server_error": 1.0}'
for i in 1 2; do read -r status _ < <(chat); show "request $i: HTTP $status from $(header x-sidecar-upstream)"; done
state=$(admin_get /admin/breakers | json '{b["key"]: b["state"] for b in d["breakers"]}.get("openai")')
show "breaker openai is $state"
check "the breaker opened after 5 consecutive failures" test "$state" = "open"
curl -s -o /dev/null -X POST "$OPENAI_MOCK/stats/reset"
for i in 3 4 5; do read -r status _ < <(chat); show "request $i: HTTP $status from $(header x-sidecar-upstream)"; done
calls=$(mock_calls "$OPENAI_MOCK")
show "calls that reached OpenAI meanwhile: $calls"
check "open breaker: OpenAI got no calls, Anthropic answered" test "$calls $(header x-sidecar-upstream)" = "0 anthropic"
mock_clear "$OPENAI_MOCK"
wait_s=$(admin_get /admin/breakers | json '{b["key"]: b for b in d["breakers"]}["openai"]["half_open_in"] or 0')
say "OpenAI is healthy again; the breaker lets a probe through after open_for (${wait_s}s left)…"
sleep "$("$PY" -c "print(max(0.0, float('$wait_s')) + 0.2)")"
read -r status _ < <(chat)
state=$(admin_get /admin/breakers | json '{b["key"]: b["state"] for b in d["breakers"]}.get("openai")')
show "probe: HTTP $status from $(header x-sidecar-upstream); breaker openai is $state"
check "the half-open probe succeeded and closed the breaker" test "$(header x-sidecar-upstream) $state" = "openai closed"

# 5 ----------------------------------------------------------------------------------------
title "5. Validation fails fast, with no upstream call"
curl -s -o /dev/null -X POST "$OPENAI_MOCK/stats/reset"
took=1
for _ in 1 2 3; do  # the best of three, so a busy machine's scheduling hiccup does not count
  read -r status this < <(curl -s -o "$WORK/b" -D "$WORK/h" -w '%{http_code} %{time_total}' \
    "$BASE_URL/v1/chat/completions" -H 'content-type: application/json' -d '{"model": "gpt-4o", "messages": []}')
  took=$("$PY" -c "print(min(float('$took'), float('$this')))")
done
show "HTTP $status in ${took}s: $(json 'd["error"]["message"]' < "$WORK/b")"
check "400 in under 10 ms, 0 upstream calls" \
  "$PY" -c "import sys; sys.exit(not ('$status' == '400' and float('$took') < 0.010 and '$(mock_calls "$OPENAI_MOCK")' == '0'))"

# 6 ----------------------------------------------------------------------------------------
title "6. Streaming — and a stream cut mid-answer, completed by continuation"
STREAM='{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Tell me a story."}]}'
curl -sN "$BASE_URL/v1/chat/completions" -H 'content-type: application/json' -d "$STREAM" > "$WORK/s1"
say "A normal stream: $(grep -c '^data: {' "$WORK/s1") chunks, then $(tail -c 15 "$WORK/s1" | tr -d '\n')"
say "Now OpenAI cuts its stream after 5 chunks; the sidecar asks Anthropic to continue the answer."
mock_script "$OPENAI_MOCK" '{"script": [{"fail_chunk": 5}]}'
curl -sN "$BASE_URL/v1/chat/completions" -H 'content-type: application/json' -d "$STREAM" > "$WORK/s2"
text() { "$PY" -c "
import json, sys
out = []
for line in open(sys.argv[1]):
    if line.startswith('data: {'):
        event = json.loads(line[6:])
        out += [c['delta'].get('content') or '' for c in event.get('choices', [])]
print(''.join(out))" "$1"; }
show "client received: $(text "$WORK/s2" | cut -c1-90)…"
check "the cut stream arrived whole, identical to the uncut one, with one [DONE]" \
  test "$(text "$WORK/s2")|$(grep -c 'data: \[DONE\]' "$WORK/s2")" = "$(text "$WORK/s1")|1"

# 7 ----------------------------------------------------------------------------------------
title "7. A live policy edit — and a broken edit that is refused"
POLICY_FILE=$(admin_get /admin/policy | json 'd["policy"]["files"][0]')
POLICY_BACKUP="$WORK/policy.backup"
cp "$POLICY_FILE" "$POLICY_BACKUP"
say "Swapping the chat route's order (Anthropic first) in $POLICY_FILE, without a restart…"
"$PY" - "$POLICY_FILE" <<'EOF'
import sys
path = sys.argv[1]
text = open(path).read()
old = "      - upstream: openai\n      - upstream: anthropic\n"
new = "      - upstream: anthropic\n      - upstream: openai\n"
assert old in text, "unexpected default policy layout"
open(path, "w").write(text.replace(old, new, 1))
EOF
upstream=""
for _ in $(seq 1 30); do chat > /dev/null; upstream=$(header x-sidecar-upstream); [ "$upstream" = anthropic ] && break; sleep 0.1; done
show "now answered by: $upstream (policy $(header x-sidecar-policy))"
check "the edit is live without a restart" test "$upstream" = "anthropic"
say "Now a typo: 'deadline: 30s' becomes 'deadline: 30' (not a duration)."
sed -i 's/^  deadline: 30s/  deadline: 30/' "$POLICY_FILE"
err=""
for _ in $(seq 1 30); do err=$(admin_get /admin/policy | json '(d["last_error"] or {}).get("errors", [""])[0]'); [ -n "$err" ] && break; sleep 0.1; done
show "refused: $err"
chat > /dev/null
check "the broken edit is refused and the last good policy keeps serving" \
  test -n "$err" -a "$(header x-sidecar-upstream)" = "anthropic"
cp "$POLICY_BACKUP" "$POLICY_FILE"
for _ in $(seq 1 30); do chat > /dev/null; [ "$(header x-sidecar-upstream)" = openai ] && break; sleep 0.1; done
check "restored: OpenAI first again" test "$(header x-sidecar-upstream)" = "openai"

# 8 ----------------------------------------------------------------------------------------
title "8. A preferred provider"
say "A request may name the provider it wants first (header x-sidecar-prefer, or the body"
say "field preferred_provider, which never goes upstream); the rest of the chain follows."
read -r status _ < <(chat -H 'x-sidecar-prefer: anthropic')
show "x-sidecar-prefer: anthropic → HTTP $status from $(header x-sidecar-upstream)"
prefer_ok="$status $(header x-sidecar-upstream)"
read -r status _ < <(chat -H 'x-sidecar-prefer: elsewhere')
show "x-sidecar-prefer: elsewhere → HTTP $status: $(json 'd["error"]["message"]' < "$WORK/b")"
check "the preferred provider answered, and an unknown one got a 400" \
  test "$prefer_ok $status" = "200 anthropic 400"

# 9 ----------------------------------------------------------------------------------------
title "9. The metrics that show all of it"
curl -s "$BASE_URL/metrics" > "$WORK/metrics"
grep -E '^sidecar_(requests_total|retries_total|fallbacks_total|continuations_total|breaker_state|breaker_transitions_total|policy_reloads_total)\{' "$WORK/metrics" \
  | grep -v ' 0.0$' | sed 's/^/    /'
check "fallbacks, retries, a continuation and breaker transitions were counted" \
  "$PY" -c "
import sys
text = open('$WORK/metrics').read()
def total(name): return sum(float(l.rsplit(' ', 1)[1]) for l in text.splitlines() if l.startswith(name + '{'))
sys.exit(not all(total(n) > 0 for n in ('sidecar_retries_total', 'sidecar_fallbacks_total',
    'sidecar_continuations_total', 'sidecar_breaker_transitions_total')))"

echo
if [ "$FAILED" = 0 ]; then
  printf '%sAll nine scenarios behaved as narrated.%s\n' "$G$B" "$N"
else
  printf '%sSome scenarios did not behave as narrated.%s\n' "$R$B" "$N"
fi
exit "$FAILED"
