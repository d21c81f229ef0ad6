#!/usr/bin/env bash
# The project's whole test run, on a fresh Debian machine with Rust installed:
# installs and starts what the tests need, then runs formatting, lint and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# System packages the tests use. Installed only when missing, so a warm machine skips apt.
need_pkgs=()
command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)
# The system CA roots the upstream clients trust (src/tls.rs loads them).
[ -s /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The OpenID provider the auth tests run against (npm oidc-provider, pinned by the lock file).
if [ -f tests/oidc/package-lock.json ]; then
  say "installing the OpenID provider (npm ci)"
  npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
fi

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Prometheus alerting rules and their unit tests.
if compgen -G "config/prometheus/*.yml" >/dev/null; then
  say "promtool check rules / test rules"
  promtool check rules config/prometheus/*rules*.yml
  if compgen -G "config/prometheus/tests/*.yml" >/dev/null; then
    promtool test rules config/prometheus/tests/*.yml
  fi
fi

# A real self-hosted model (llama.cpp's OpenAI-compatible server with SmolLM2-135M) for
# tests/real_model.rs; the first run builds llama-cpp-python into ~/.cache/ai-gateway (minutes).
say "starting the real model server (scripts/real-model.sh)"
AIGW_REAL_MODEL_URL="$(scripts/real-model.sh start)"
export AIGW_REAL_MODEL_URL
trap 'scripts/real-model.sh stop' EXIT

say "cargo test"
cargo test --workspace --locked
