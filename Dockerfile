# cache-layer: a multi-stage build. The builder compiles the dependencies in a layer of
# their own (rebuilt only when Cargo.toml or Cargo.lock change), then the sources; the
# runtime image is Debian slim with the binary, the shipped configuration and a
# non-root user.

FROM rust:1-bookworm AS builder
WORKDIR /build
# Dependencies first: a stub crate with the real manifest.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin cache-layer \
    && rm -rf src
# Then the sources.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin cache-layer

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cache-layer
COPY --from=builder /build/target/release/cache-layer /usr/local/bin/cache-layer
COPY config/cache-layer.toml /etc/cache-layer/cache-layer.toml
ENV CACHE_LAYER_CONFIG=/etc/cache-layer/cache-layer.toml
USER cache-layer
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["cache-layer"]
CMD ["run"]
