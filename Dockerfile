# syntax=docker/dockerfile:1
# `runbook serve` in a container (docs/install.md, "Container"): a static musl binary (rustls, no
# OpenSSL) on distroless/static, as a non-root user, with the Debian package's example
# configuration in /etc/runbook and its state in the /var/lib/runbook volume.
#
#     docker build -t runbook .
#     docker run -p 9750:9750 -v runbook-state:/var/lib/runbook --env-file runbook.env runbook
#
# The build is a release build of the AWS SDK: about 17 minutes on 2 cores, less with the cache
# mounts below once they are warm.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-gcc for aws-lc-rs's C (aws-lc-sys); cmake for its build script where it needs one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools cmake \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# The registry and target folders are cache mounts, so a source change rebuilds the crate, not
# the SDK; the binary is copied out of the (unexported) cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl --bin runbook \
    && cp target/x86_64-unknown-linux-musl/release/runbook /usr/local/bin/runbook
# Static: nothing to load at run time (distroless/static has no libc).
RUN ! ldd /usr/local/bin/runbook 2>/dev/null | grep -q '=>' \
    && /usr/local/bin/runbook --version
# The layout of the Debian package: configuration and example runbooks in /etc/runbook, state
# in /var/lib/runbook (owned by distroless's nonroot user, 65532).
RUN mkdir -p /out/etc/runbook /out/var/lib/runbook \
    && cp packaging/etc/runbook.toml packaging/etc/hooks.toml /out/etc/runbook/ \
    && cp -r runbooks stdlib /out/etc/runbook/ \
    && chown -R 65532:65532 /out/var/lib/runbook \
    && chmod 0750 /out/var/lib/runbook

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /usr/local/bin/runbook /usr/bin/runbook
COPY --from=build /out/ /
# The same files the systemd unit names; RUNBOOK_LISTEN replaces hooks.toml's loopback address
# (a container's port is reached from outside it). Secrets come from the orchestrator as
# environment variables: RUNBOOK_ALERTMANAGER_TOKEN, RUNBOOK_HOOK_SECRET, RUNBOOK_ADMIN_TOKEN, ...
ENV RUNBOOK_CONFIG=/etc/runbook/runbook.toml \
    RUNBOOK_HOOKS=/etc/runbook/hooks.toml \
    RUNBOOK_PATH=/etc/runbook/runbooks \
    RUNBOOK_TRANSCRIPTS=/var/lib/runbook/transcripts \
    RUNBOOK_LISTEN=0.0.0.0:9750 \
    RUNBOOK_LOG_FORMAT=json
WORKDIR /var/lib/runbook
VOLUME ["/var/lib/runbook"]
USER 65532:65532
EXPOSE 9750
# SIGTERM drains: running runs get hooks.toml's server.drain (60s) to finish. Give the container
# longer than that to stop (docker stop -t 90, ECS stopTimeout, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# No curl in the image: the binary probes its own /healthz (RUNBOOK_LISTEN, on loopback), exit 1
# while unhealthy (draining, a worker lost, the journal not writable).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["/usr/bin/runbook", "serve", "--healthcheck"]
ENTRYPOINT ["/usr/bin/runbook"]
CMD ["serve"]
