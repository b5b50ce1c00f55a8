# One Dockerfile for the six services and the load generator. The builder
# compiles all seven binaries once; each has a small final stage of its own:
#
#   docker build --target gateway -t ecommerce/gateway:dev .
#
# targets: gateway inventory order user producer consumer, loadgen (the load
# generator, tools/loadgen: a batch tool, no port), and operator (the kube-rs
# operator, built in a stage of its own only when asked for)
# (scripts/check-packaging.py checks this file: every target, its port,
# its binary, the non-root user, the entrypoint, the health check.)
#
# Runtime: distroless cc (glibc, CA certificates, no shell, no package
# manager) as uid 10001, plus one static busybox binary at
# /usr/local/bin/busybox, used only by health checks (`busybox sh -c` running
# `busybox wget -q -O /dev/null http://127.0.0.1:$HEALTHCHECK_PORT/healthz`),
# since the services have no probe mode of their own. About 25 MB + the binary.
#
# Needs BuildKit (the default builder of Docker 23+, and of `docker compose
# build`): it builds only the stages a target uses, so BINARIES=prebuilt
# never touches the Rust toolchain. No `# syntax=` line: the engine's own
# Dockerfile frontend reads this file, so a build needs no frontend image
# from a registry.
#
# Build arguments (defaults: the public images users pull):
#   RUST_IMAGE     the builder's toolchain image
#   RUNTIME_IMAGE  the final stages' base
#   BUSYBOX_IMAGE  where the static /bin/busybox for health checks comes from
#   BINARIES       builder (default): compile the services in the builder stage;
#                  prebuilt: take target/release/<service> from the build
#                  context instead, as built on a glibc 2.36 (Debian 12) host by
#                  scripts/release-build.sh, with the builder's PACKAGES (CI
#                  does this: scripts/compose-test.sh). The final stages are
#                  the same.
# CI builds with local stand-ins for the images (scripts/docker-base-images.sh).

ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12
ARG BUSYBOX_IMAGE=busybox:1.37.0-musl
ARG BINARIES=builder

# --- planner: the workspace's manifests with stub sources --------------------
# Copies every Cargo.toml, the lock file and empty stand-ins for every target
# (src/main.rs, src/lib.rs, src/bin/*.rs, build.rs, and the services' shared
# build script tools/link-order/build.rs) into /recipe. /recipe
# changes only when a manifest or the set of targets changes, so the
# dependency layer below stays cached across source edits. New workspace
# members are picked up without editing this file.
FROM ${RUST_IMAGE} AS planner
WORKDIR /src
COPY . .
RUN set -eu; \
    mkdir -p /recipe; \
    cp Cargo.toml Cargo.lock /recipe/; \
    find . -name Cargo.toml -not -path './Cargo.toml' -not -path './target/*' | while read -r manifest; do \
      dir=$(dirname "$manifest"); \
      mkdir -p "/recipe/$dir"; \
      cp "$manifest" "/recipe/$dir/"; \
      for stub in src/main.rs build.rs; do \
        if [ -f "$dir/$stub" ]; then mkdir -p "/recipe/$dir/$(dirname "$stub")"; echo 'fn main() {}' > "/recipe/$dir/$stub"; fi; \
      done; \
      if [ -f "$dir/src/lib.rs" ]; then mkdir -p "/recipe/$dir/src"; : > "/recipe/$dir/src/lib.rs"; fi; \
      if [ -d "$dir/src/bin" ]; then \
        find "$dir/src/bin" -name '*.rs' | while read -r bin; do \
          mkdir -p "/recipe/$(dirname "$bin")"; echo 'fn main() {}' > "/recipe/$bin"; \
        done; \
      fi; \
    done; \
    mkdir -p /recipe/tools/link-order; \
    echo 'fn main() {}' > /recipe/tools/link-order/build.rs

# --- recipe: the stub workspace on the Rust toolchain --------------------------
FROM ${RUST_IMAGE} AS recipe
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY --from=planner /recipe/ ./

# --- sources: the workspace's sources, copied once for both builders ---------
FROM scratch AS sources
COPY proto /proto
COPY crates /crates
COPY services /services
COPY e2e /e2e
COPY tools /tools

# --- builder and operator-builder: the same steps, each its own PACKAGES ------
# builder: the six services and loadgen; operator-builder: the kube-rs
# operator, with a dependency layer of its own (kube, k8s-openapi), so the six
# services' builds never compile it and it is built only for --target
# operator. Each runs, on the stub workspace: the dependency layer (every
# third-party crate, compiled against the stubs), then the real sources, then
# the workspace crates, leaving /out/<binary> for each of BINS.
# -p keeps the build (and its feature resolution) the same in both cargo runs
# and leaves the other workspace members out. COPY keeps the files' own
# modification times, which can be older than the stubs', so the sources are
# touched for cargo to rebuild the workspace crates (only those: the
# dependencies stay cached). The two stages differ only in their ARG lines.
FROM recipe AS builder
ARG PACKAGES="-p gateway -p inventory -p order -p user -p producer -p consumer -p loadgen"
ARG BINS="gateway inventory order user producer consumer loadgen"
RUN cargo build --release --locked ${PACKAGES}
COPY --from=sources / ./
RUN set -eu; \
    find crates services e2e tools proto -type f \( -name '*.rs' -o -name '*.proto' \) -exec touch {} +; \
    cargo build --release --locked ${PACKAGES}; \
    mkdir -p /out; \
    for s in ${BINS}; do cp "target/release/$s" "/out/$s"; done

FROM recipe AS operator-builder
ARG PACKAGES="-p operator --bin operator"
ARG BINS="operator"
RUN cargo build --release --locked ${PACKAGES}
COPY --from=sources / ./
RUN set -eu; \
    find crates services e2e tools proto -type f \( -name '*.rs' -o -name '*.proto' \) -exec touch {} +; \
    cargo build --release --locked ${PACKAGES}; \
    mkdir -p /out; \
    for s in ${BINS}; do cp "target/release/$s" "/out/$s"; done

# --- prebuilt: the seven binaries from the host's target/release -------------
# (.dockerignore lets exactly these seven files of target/ into the context.)
FROM scratch AS prebuilt
COPY target/release/gateway target/release/inventory target/release/order \
     target/release/user target/release/producer target/release/consumer \
     target/release/loadgen /out/

# --- binaries: /out/<service> from the builder or from the host --------------
FROM ${BINARIES} AS binaries

# --- runtime base --------------------------------------------------------------
# A static busybox (it needs nothing from the runtime base) for the
# health-check probe only. The probes pass no `wget -T`: HEALTHCHECK's
# --timeout bounds them, and Debian's static busybox 1.35 (the stand-in CI
# builds) crashes on -T.
FROM ${BUSYBOX_IMAGE} AS busybox

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=busybox /bin/busybox /usr/local/bin/busybox
ENV APP_ENV=production \
    LOG_FORMAT=json
WORKDIR /app
USER 10001:10001

# --- service: the health check, once for every image that serves ------------
# Docker substitutes no variable in a HEALTHCHECK (nor in an exec-form
# ENTRYPOINT or CMD) and the runtime base has no /bin/sh for the shell form,
# so the probe runs busybox's own sh, which reads HEALTHCHECK_PORT (set by each
# target below to the port it EXPOSEs) from the container's environment when
# it probes; `:?` turns an unset port into a failed probe that says so. No
# `wget -T` (see busybox above); nothing is written to the root filesystem.
FROM runtime AS service
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/busybox", "sh", "-c", "exec /usr/local/bin/busybox wget -q -O /dev/null http://127.0.0.1:${HEALTHCHECK_PORT:?}/healthz"]

# --- one target per image ------------------------------------------------------
# What stays per target is what Docker cannot share: the port (the probe's ENV,
# EXPOSEd from it), the binary's name and the exec-form ENTRYPOINT (it takes no
# variable; a shell form would need /bin/sh and make the shell PID 1). A single
# stage parametrised by build args would not do: `docker build --target
# gateway` with no argument must give the gateway image.
FROM service AS gateway
ENV HEALTHCHECK_PORT=8080
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/gateway /usr/local/bin/gateway
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM service AS inventory
ENV HEALTHCHECK_PORT=50051
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/inventory /usr/local/bin/inventory
ENTRYPOINT ["/usr/local/bin/inventory"]

FROM service AS order
ENV HEALTHCHECK_PORT=50052
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/order /usr/local/bin/order
ENTRYPOINT ["/usr/local/bin/order"]

FROM service AS user
ENV HEALTHCHECK_PORT=50053
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/user /usr/local/bin/user
ENTRYPOINT ["/usr/local/bin/user"]

FROM service AS producer
ENV HEALTHCHECK_PORT=50054
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/producer /usr/local/bin/producer
ENTRYPOINT ["/usr/local/bin/producer"]

FROM service AS consumer
ENV HEALTHCHECK_PORT=50055
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=binaries /out/consumer /usr/local/bin/consumer
ENTRYPOINT ["/usr/local/bin/consumer"]

# The operator (services/operator): watches EcommerceStack resources; metrics,
# /healthz and /readyz on METRICS_ADDR (charts/ecommerce-operator: port 8080).
FROM service AS operator
ENV HEALTHCHECK_PORT=8080
EXPOSE ${HEALTHCHECK_PORT}
COPY --from=operator-builder /out/operator /usr/local/bin/operator
ENTRYPOINT ["/usr/local/bin/operator"]

# The load generator (tools/loadgen): runs once against the gateway and exits
# (the chart's loadgen Job); no port, no health check, so straight on runtime.
FROM runtime AS loadgen
COPY --from=binaries /out/loadgen /usr/local/bin/loadgen
ENTRYPOINT ["/usr/local/bin/loadgen"]
