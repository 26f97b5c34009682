# touchstream container image: a Rust build stage and a small Debian runtime.
#
#   docker build -t touchstream:0.1.0 .
#   docker run --rm -p 9464:9464 -e TOUCHSTREAM_KAFKA__BROKERS=broker:9092 touchstream:0.1.0
#
# The runtime image holds the binary, CA certificates and OpenSSL only; it
# runs as the unprivileged user 10001 and needs no writable root filesystem.
# In Kubernetes the configuration comes from the ConfigMap mounted at
# /etc/touchstream (k8s/); the file baked in below is an empty default (every
# key at its default, overridable by TOUCHSTREAM_<SECTION>__<KEY> variables).
#
# Without the Rust image (offline, or a binary built elsewhere): the target
# `runtime-prebuilt` takes `touchstream` from the root of the build context
# instead of the build stage, which is then skipped (BuildKit, buildah):
#
#   mkdir ctx && cp target/release/touchstream ctx/
#   docker build --target runtime-prebuilt -f Dockerfile -t touchstream ctx
#
# (The binary must link the runtime's glibc and OpenSSL 3: build it on
# Debian bookworm. The repository's .dockerignore admits no binary, hence the
# separate context.) scripts/container-test builds it that way with podman
# on a local Debian base (RUNTIME_IMAGE); see docs/container.md.
#
# No `# syntax=` line: BuildKit always pulls the frontend image such a line
# names (docker/dockerfile), which fails offline, and its built-in Dockerfile
# frontend (Docker 20.10 and later; the default builder since 23.0) already
# has everything used here, `RUN --mount=type=cache` included (syntax 1.2).
# buildah/podman ignore the line anyway.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build
FROM ${RUST_IMAGE} AS build
# rdkafka builds the bundled librdkafka with its own configure script and
# make (no cmake), and links OpenSSL (the "ssl" feature, and native-tls for
# the schema registry client) through pkg-config.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      make g++ libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything the build reads: the manifest and lock file, the sources, the
# Avro schemas and the example input compiled in with include_str!, and the
# bench target declared in Cargo.toml (tests/ are not needed to build).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY schemas ./schemas
COPY examples ./examples
COPY benches ./benches
# --locked: exactly the dependency versions of Cargo.lock. The caches keep
# the registry and compiled dependencies between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin touchstream \
 && install -D -m 0755 target/release/touchstream /out/touchstream \
 && strip --strip-debug /out/touchstream \
 && /out/touchstream --version

# ---------------------------------------------------------------- runtime
# Everything of the runtime image but the binary; the two stages below add it.
FROM ${RUNTIME_IMAGE} AS runtime-base
# ca-certificates: TLS to Kafka and the schema registry with public or
# mounted CAs; libssl3: OpenSSL for librdkafka and native-tls.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 touchstream \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin touchstream \
 && mkdir -p /etc/touchstream \
 && printf '%s\n' \
      '# Default touchstream configuration: every key at its default.' \
      '# Mount your own at /etc/touchstream/touchstream.toml (k8s/touchstream.toml)' \
      '# or override keys with TOUCHSTREAM_<SECTION>__<KEY> variables.' \
      > /etc/touchstream/touchstream.toml
USER 10001:10001
EXPOSE 9464
# SIGTERM drains: final checkpoint, leave the consumer group, exit 0
# (allow 60 s; see k8s/statefulset.yaml). touchstream handles the signal
# itself, so it can run as PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/touchstream"]
CMD ["run", "--config", "/etc/touchstream/touchstream.toml"]

LABEL org.opencontainers.image.title="touchstream" \
      org.opencontainers.image.description="Omnichannel customer touchpoints in, live per-customer signals out: a stateful event-time engine on Kafka." \
      org.opencontainers.image.licenses="Apache-2.0"

# ------------------------------------------------------- runtime-prebuilt
# `--target runtime-prebuilt`: the binary from the build context (see the top).
FROM runtime-base AS runtime-prebuilt
COPY touchstream /usr/local/bin/touchstream

# ---------------------------------------------------------------- runtime
# The default target (the last stage): the binary of the build stage.
FROM runtime-base AS runtime
COPY --from=build /out/touchstream /usr/local/bin/touchstream
