# Shared by the bench scripts (sourced, not run): ports, readiness waits and the signed token
# every gateway request carries.

# bench_scratch: a scratch directory in WORK (kept, and named on stderr, when KEEP is set) and
# an exit trap that stops every process whose pid the script added to PIDS.
bench_scratch() {
  WORK=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
        if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi' EXIT
}

# rss_kb PID, cpu_s PID: a process's resident memory (kB) and CPU time so far (user + system, s).
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_http URL [TRIES]: poll URL every 50 ms until it answers 2xx (default 200 tries, 10 s).
wait_http() {
  local tries=${2:-200}
  for _ in $(seq 1 "$tries"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "not up: $1" >&2; return 1
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# signed_token DIR: a new RS256 key in DIR/key.pem and a realistic self-signed user token
# (scope complete_code, valid for an hour) signed with it; sets TOKEN and AUTH (the headers).
signed_token() {
  openssl genrsa -out "$1/key.pem" 2048 2>/dev/null
  local now header payload sig
  now=$(date +%s)
  header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"iss":"gitlab-ai-gateway","aud":"gitlab-ai-gateway","sub":"777","exp":%d,"nbf":%d,"iat":%d,"jti":"bench","gitlab_realm":"saas","gitlab_instance_id":"1234","scopes":["complete_code"]}' "$((now + 3600))" "$now" "$now" | b64url)
  sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$1/key.pem" | b64url)
  TOKEN="$header.$payload.$sig"
  AUTH=(-H "Authorization: Bearer $TOKEN" -H "X-Gitlab-Authentication-Type: oidc" -H "X-Gitlab-Realm: saas"
        -H "X-Gitlab-Instance-Id: 1234" -H "X-Gitlab-Global-User-Id: 777")
}

# bench_bodies DIR: the request bodies of the scenarios (Anthropic Messages direct, the same through
# /v2/code/completions, both streamed, and the mock-model body).
bench_bodies() {
  cat > "$1/anthropic.json" <<'EOF'
{"model":"claude-3-5-sonnet-20240620","max_tokens":64,"messages":[{"role":"user","content":"def hello_world():"}]}
EOF
  cat > "$1/anthropic-stream.json" <<'EOF'
{"model":"claude-3-5-sonnet-20240620","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"def hello_world():"}]}
EOF
  cat > "$1/gw.json" <<'EOF'
{"prompt_version":3,"current_file":{"file_name":"main.py","content_above_cursor":"def hello_world():","content_below_cursor":""},"model_provider":"anthropic","model_name":"claude-3-5-sonnet-20240620","prompt":[{"role":"user","content":"def hello_world():"}]}
EOF
  # Streamed through /v2/code/completions (raw text): the one streaming endpoint a self-signed
  # user token may call, as in the original.
  cat > "$1/gw-stream.json" <<'EOF'
{"prompt_version":3,"current_file":{"file_name":"main.py","content_above_cursor":"def hello_world():","content_below_cursor":""},"model_provider":"anthropic","model_name":"claude-3-5-sonnet-20240620","stream":true,"prompt":[{"role":"user","content":"def hello_world():"}]}
EOF
  cat > "$1/mock-model.json" <<'EOF'
{"prompt_version":1,"current_file":{"file_name":"main.py","content_above_cursor":"def is_even(n: int) ->","content_below_cursor":""}}
EOF
}

# start_mock ARGS...: the mock upstream on a free port (sets MOCK_PID, MOCK).
# start_gateway ENV...: the gateway (GATEWAY_BIN, default $BIN/ai-gateway) in front of it, logging
# to $WORK/gateway.log and trusting the key of signed_token (sets GW_PID, GW). GATEWAY_WRAP, an
# array, is a command to run it under (taskset, valgrind); GATEWAY_WAIT the readiness tries.
# Both need BIN, WORK and the PIDS array of the calling script.
start_mock() { # mode, extra args...
  local port; port=$(free_port)
  "$BIN/mock-upstream" --listen "127.0.0.1:$port" --threads 1 "$@" >"$WORK/mock.log" 2>&1 &
  PIDS+=($!); MOCK_PID=$!; MOCK="http://127.0.0.1:$port"; wait_http "$MOCK/health"
}
start_gateway() { # extra env...
  local port mport; port=$(free_port); mport=$(free_port)
  env AIGW_FASTAPI__API_HOST=127.0.0.1 AIGW_FASTAPI__API_PORT="$port" \
      AIGW_FASTAPI__METRICS_HOST=127.0.0.1 AIGW_FASTAPI__METRICS_PORT="$mport" \
      AIGW_LOGGING__TO_FILE="$WORK/gateway.log" \
      AIGW_SELF_SIGNED_JWT__SIGNING_KEY="$(cat "$WORK/key.pem")" \
      AIGW_SELF_SIGNED_JWT__VALIDATION_KEY="$(cat "$WORK/key.pem")" \
      AIGW_GITLAB_URL=http://127.0.0.1:9 AIGW_CUSTOMER_PORTAL_URL=http://127.0.0.1:9 \
      ANTHROPIC_API_KEY=bench-key ANTHROPIC_BASE_URL="$MOCK" "$@" \
      ${GATEWAY_WRAP[@]+"${GATEWAY_WRAP[@]}"} "${GATEWAY_BIN:-$BIN/ai-gateway}" >"$WORK/gateway.out" 2>&1 &
  PIDS+=($!); GW_PID=$!; GW="http://127.0.0.1:$port"
  wait_http "$GW/monitoring/healthz" "${GATEWAY_WAIT:-200}"
}
