# cache-layer: a multi-stage build. The builder compiles the dependencies in a layer of
# their own (rebuilt only when a manifest or Cargo.lock changes), then the sources. The
# runtime image (the last stage, so the default target) is Debian slim with the
# `cache-layer` binary (librdkafka and OpenSSL linked in statically, so no libssl), the
# shipped configuration and a non-root user. The `tools` stage
# adds `cache-layer-dev` (the demo and the stream generator) for the compose stack's
# synthetic producer; it is never the image that runs the daemon.

FROM rust:1.95.0-bookworm AS builder
WORKDIR /build
# Dependencies first: stub crates with the real manifests.
COPY Cargo.toml Cargo.lock ./
COPY crates/testkit/Cargo.toml crates/testkit/
RUN mkdir -p src/bin/cache-layer crates/testkit/src/bin/cache-layer-bench \
    && for main in src/bin/cache-layer/main.rs crates/testkit/src/bin/cache-layer-dev.rs \
         crates/testkit/src/bin/cache-layer-bench/main.rs; do echo 'fn main() {}' > "$main"; done \
    && touch src/lib.rs crates/testkit/src/lib.rs \
    && cargo build --release --locked --bin cache-layer --bin cache-layer-dev \
    && rm -rf src crates/testkit/src
# Then the sources.
COPY src ./src
COPY crates/testkit/src ./crates/testkit/src
RUN touch src/lib.rs src/bin/cache-layer/main.rs crates/testkit/src/lib.rs \
    && cargo build --release --locked --bin cache-layer --bin cache-layer-dev \
    && strip target/release/cache-layer target/release/cache-layer-dev

FROM debian:12.11-slim AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cache-layer
COPY --from=builder /build/target/release/cache-layer /usr/local/bin/cache-layer
COPY config/cache-layer.toml /etc/cache-layer/cache-layer.toml
ENV CACHE_LAYER_CONFIG=/etc/cache-layer/cache-layer.toml
USER cache-layer

FROM base AS tools
COPY --from=builder /build/target/release/cache-layer-dev /usr/local/bin/cache-layer-dev

FROM base AS runtime
EXPOSE 9464 9465
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["cache-layer"]
CMD ["run"]
