# syntax=docker/dockerfile:1
# The co2-bridge image: built from this workspace, run as a non-root user on
# Debian slim (glibc, bash for the compose health check; TLS is rustls, but
# the Kafka client, librdkafka, links the system's OpenSSL: libssl3).
# docker-compose.yml builds it; by hand:
#   docker build -t co2-telemetry/co2-bridge:local .
#   docker run --rm co2-telemetry/co2-bridge:local check-config

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build artefacts between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p co2-bridge --bin co2-bridge \
    && install -D -m 0755 target/release/co2-bridge /out/co2-bridge

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin co2
COPY --from=build /out/co2-bridge /usr/local/bin/co2-bridge
USER 10001:10001
# /metrics, /healthz, /readyz. The binary's default is loopback only; in a
# container it must listen on the container's interface to be scraped.
ENV CO2_BRIDGE__HTTP__LISTEN=0.0.0.0:9464
EXPOSE 9464
# SIGTERM makes the bridge flush, ack and disconnect before it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/co2-bridge"]
CMD ["run"]
