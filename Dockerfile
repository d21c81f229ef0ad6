# syntax=docker/dockerfile:1
# Multi-stage build: a full Rust toolchain builds the release binary; the runtime image is a
# slim Debian with the binary, a non-root user and nothing else (no shell tools are needed: the
# HEALTHCHECK uses the binary's own probe).

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Build dependencies first so that code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/Cargo.toml
COPY bench/mock-upstream/Cargo.toml bench/mock-upstream/Cargo.toml
COPY bench/loadgen/Cargo.toml bench/loadgen/Cargo.toml
# Stubs for every workspace member and every declared bench target (cargo refuses a manifest
# whose targets are missing), read from the manifest so a new bench cannot break this step.
RUN mkdir -p src actors/src bench/mock-upstream/src bench/loadgen/src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs actors/src/lib.rs \
    && echo 'fn main() {}' > bench/mock-upstream/src/main.rs \
    && echo 'fn main() {}' > bench/loadgen/src/main.rs \
    && for b in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
         echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked -p ai-gateway \
    && rm -rf src actors/src bench/mock-upstream/src bench/loadgen/src benches
COPY . .
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
    && cargo build --release --locked -p ai-gateway \
    && strip target/release/ai-gateway

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 aigateway
COPY --from=builder /src/target/release/ai-gateway /usr/local/bin/ai-gateway
COPY --from=builder /src/config /etc/ai-gateway
USER aigateway
WORKDIR /home/aigateway
# The original image listens on 5052 (Runway overrides it with AIGW_FASTAPI__API_PORT=8080).
ENV AIGW_FASTAPI__API_PORT=5052 \
    AIGW_FASTAPI__METRICS_PORT=8082
EXPOSE 5052 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/ai-gateway", "--healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ai-gateway"]
