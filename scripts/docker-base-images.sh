#!/usr/bin/env bash
# Local stand-ins for the public base images, built from Debian bookworm's
# packages, for machines that reach Debian's archive but no image registry
# (CI here). Each gets a name of its own under ecommerce-local/, never an
# upstream name, and is handed to the build and to compose explicitly:
#
#   ecommerce-local/debian:bookworm-minbase  debootstrap --variant=minbase, docker import
#   ecommerce-local/cc-runtime:bookworm      for gcr.io/distroless/cc-debian12: the files of
#                                            base-files, netbase, tzdata, ca-certificates, libc6,
#                                            libgcc-s1, libstdc++6, libssl3; no shell, no apt
#   ecommerce-local/busybox:bookworm-static  for busybox:*-musl: Debian's static /bin/busybox
#   ecommerce-local/postgres:15-bookworm     for postgres:15: postgresql-15 with an entrypoint
#                                            honouring POSTGRES_USER/POSTGRES_PASSWORD
#   ecommerce-local/nats:2.9-bookworm        for nats:2.9-alpine: nats-server 2.9 and wget
#
# Usage: scripts/docker-base-images.sh        build the missing ones
#        scripts/docker-base-images.sh --env  print them as KEY=VALUE lines for
#                                             the Dockerfile's build args and compose
# Needs a running engine (scripts/ensure-docker.sh) and debootstrap.
set -euo pipefail

PREFIX=ecommerce-local
MINBASE=$PREFIX/debian:bookworm-minbase
RUNTIME=$PREFIX/cc-runtime:bookworm
BUSYBOX=$PREFIX/busybox:bookworm-static
POSTGRES=$PREFIX/postgres:15-bookworm
NATS=$PREFIX/nats:2.9-bookworm

if [ "${1:-}" = --env ]; then
  # The names the Dockerfile's ARGs and docker-compose.yml's variables take.
  echo "RUNTIME_IMAGE=$RUNTIME"
  echo "BUSYBOX_IMAGE=$BUSYBOX"
  echo "POSTGRES_IMAGE=$POSTGRES"
  echo "NATS_IMAGE=$NATS"
  exit 0
fi

log() { echo "[base-images] $*" >&2; }
# Images carry the sha256 of this script: editing a recipe rebuilds them.
RECIPE=$(sha256sum "$0" | cut -c1-16)
have() { [ "$(docker image inspect -f '{{index .Config.Labels "ecommerce.base-recipe"}}' "$1" 2>/dev/null)" = "$RECIPE" ]; }

# The classic builder is enough for these single-purpose Dockerfiles and, on
# a CLI without buildx, the only one `docker build` offers; `apt-get` inside
# needs the host's network.
build() {
  local name=$1
  log "building $name"
  DOCKER_BUILDKIT=0 docker build -q --force-rm --network host --label ecommerce.base-recipe="$RECIPE" \
    -t "$name" - >/dev/null
}

if ! have "$MINBASE"; then
  command -v debootstrap >/dev/null || { log "no debootstrap: run scripts/ensure-docker.sh install"; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase bookworm (a few minutes the first time)"
  debootstrap --variant=minbase bookworm "$root" >"$root.log" 2>&1 ||
    { log "debootstrap failed:"; tail -n 20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # apt's caches and lists are not part of the image; the builds below update.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "docker import $MINBASE"
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' -c "LABEL ecommerce.base-recipe=$RECIPE" - "$MINBASE" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi

APT='apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends'

have "$RUNTIME" || build "$RUNTIME" <<EOF
FROM $MINBASE AS packages
RUN $APT ca-certificates tzdata netbase libssl3 libstdc++6 >/dev/null
# Only the packages' own files (and the CA bundle update-ca-certificates made):
# no shell, no coreutils, no package manager, as in distroless.
RUN set -eu; mkdir /rootfs; \
    for p in base-files netbase tzdata ca-certificates libc6 libgcc-s1 libstdc++6 libssl3; do \
      dpkg -L "\$p" | while read -r f; do [ -d "\$f" ] && [ ! -L "\$f" ] || echo "\$f"; done; \
    done | grep -v '^/usr/share/\(doc\|man\|lintian\|bug\)/' | sort -u > /files; \
    for d in lib lib64 bin sbin; do if [ -L "/\$d" ]; then cp -a "/\$d" "/rootfs/\$d"; fi; done; \
    mkdir -p /rootfs/usr/lib /rootfs/usr/lib64 /rootfs/usr/bin /rootfs/usr/sbin; \
    tar -cf - --no-recursion -T /files /etc/ssl/certs/ca-certificates.crt | tar -C /rootfs --keep-directory-symlink -xf -; \
    mkdir -p -m 1777 /rootfs/tmp; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > /rootfs/etc/group
FROM scratch
COPY --from=packages /rootfs/ /
EOF

have "$BUSYBOX" || build "$BUSYBOX" <<EOF
FROM $MINBASE AS packages
RUN $APT busybox-static >/dev/null
FROM scratch
COPY --from=packages /bin/busybox /bin/busybox
CMD ["/bin/busybox", "sh"]
EOF

# The official image's contract that docker-compose.yml relies on: the
# superuser and password from POSTGRES_USER/POSTGRES_PASSWORD, data in
# /var/lib/postgresql/data, password logins from the network, pg_isready.
have "$POSTGRES" || build "$POSTGRES" <<'EOF'
FROM ecommerce-local/debian:bookworm-minbase
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/postgresql/data /run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
RUN printf '%s\n' '#!/bin/sh' 'set -eu' \
      'chown postgres:postgres "$PGDATA"; chmod 700 "$PGDATA"' \
      'if [ ! -s "$PGDATA/PG_VERSION" ]; then' \
      '  printf "%s" "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /run/postgresql/pw' \
      '  chown postgres /run/postgresql/pw' \
      '  runuser -u postgres -- initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --pwfile=/run/postgresql/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null' \
      '  rm -f /run/postgresql/pw' \
      '  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"' \
      'fi' \
      'exec runuser -u postgres -- postgres -D "$PGDATA" -c listen_addresses="*"' \
      > /usr/local/bin/postgres-entrypoint && chmod 755 /usr/local/bin/postgres-entrypoint
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
EOF

have "$NATS" || build "$NATS" <<EOF
FROM $MINBASE
RUN $APT nats-server wget >/dev/null && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/sbin/nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
CMD ["nats-server", "-js"]
EOF

log "ready: $MINBASE $RUNTIME $BUSYBOX $POSTGRES $NATS"
