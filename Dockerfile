# syntax=docker/dockerfile:1
# `upsell serve` as a container: a release build in the Rust image, then the
# binary alone on distroless (glibc and libgcc, no shell), as uid 65532.
#
#   docker build -t upsell .
#   docker run --rm -p 8080:8080 upsell                  # the demo checkpoint
#   docker run --rm -p 8080:8080 -v /srv/upsell/models:/models:ro upsell
#
# Configuration comes from the environment only (UPSELL_*; README "Deploy").
# The image carries the demo checkpoint at /models/current so that it runs as
# it is; a volume mounted at /models hides it. scripts/container-check.sh
# lints this file and runs the binary the way this image does.

# The toolchain of the build machines (rust-version in Cargo.toml is 1.95).
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# What `cargo build -p upsell` reads: the workspace's manifests (cargo loads
# every member, examples/serving included, even when building one), the lock
# file, the sources, and configs/ (src/config embeds configs/default.toml).
# .dockerignore keeps everything else out of the context.
# build.rs records the git commit when there is one (not here: .git stays
# out of the context, so run.json names no commit).
COPY Cargo.toml Cargo.lock build.rs ./
COPY examples/serving examples/serving
COPY configs configs
COPY src src
# The cache mounts keep downloaded crates and the build between image builds
# (a cold build is long: the burn stack); the binary leaves the cached target
# directory in the same step. Debug info goes (1.2 GB -> 180 MB); symbols
# stay, so backtraces still name functions.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p upsell --bin upsell \
    && strip --strip-debug -o /usr/local/bin/upsell target/release/upsell

# Debian 12 like the build stage, so the glibc the binary links is there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/upsell /usr/local/bin/upsell
COPY checkpoints/demo /models/current
# 0.0.0.0: the server's own default, loopback, is unreachable from outside a
# container. Reload (with an admin token) may load only what is under /models.
ENV UPSELL_ADDR=0.0.0.0:8080 \
    UPSELL_CHECKPOINT=/models/current \
    UPSELL_RELOAD_ROOT=/models
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
# The binary is PID 1 and handles SIGTERM itself: it stops accepting and
# finishes the requests in flight (UPSELL_SHUTDOWN_TIMEOUT_MS at most).
ENTRYPOINT ["upsell", "serve"]
