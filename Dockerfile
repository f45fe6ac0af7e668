# Portcullis container image.
#
#   docker build -t portcullis:0.1 .
#   docker run -d -p 443:8443 \
#     -v /srv/portcullis/conf:/etc/portcullis:ro \
#     -v /srv/portcullis/audit:/var/log/portcullis \
#     --env-file /srv/portcullis/keys.env --stop-timeout 40 portcullis:0.1
#
# The configuration must listen on unprivileged ports (e.g. server.https.listen: ["0.0.0.0:8443"])
# because the process runs as the non-root user `portcullis`. See docs/operations.md.

# ---- build -------------------------------------------------------------------------------------
# Needs Rust 1.89 or later (Cargo.toml rust-version); rust:1 is the latest stable release.
FROM rust:1-bookworm AS builder

# Build dependencies: Pingora (cmake for zlib-ng), bindgen (libclang), SAML signature checks
# (samael's bindings to xmlsec and libxml2, OpenSSL headers).
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config cmake libclang-dev \
      libssl-dev libxml2-dev libxmlsec1-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -m 0755 target/release/portcullis /usr/local/bin/portcullis

# ---- run ---------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: the system trust store, used to verify https:// upstreams and IdPs.
# curl: only for the HEALTHCHECK below; drop it (and the HEALTHCHECK) if your orchestrator probes
# the admin listener itself.
# libxmlsec1-openssl, libxml2: SAML signature verification (xmlsec), at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
      libxmlsec1-openssl libxml2 \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system portcullis \
 && useradd --system --gid portcullis --home-dir /nonexistent --shell /usr/sbin/nologin portcullis \
 && install -d -m 0750 -o portcullis -g portcullis /var/log/portcullis \
 && install -d -m 0750 -o root -g portcullis /etc/portcullis

COPY --from=builder /usr/local/bin/portcullis /usr/local/bin/portcullis

USER portcullis
# Audit trail (default audit.path is /var/log/portcullis/audit.jsonl): mount persistent storage.
VOLUME ["/var/log/portcullis"]

# 8443: HTTPS listener (as configured). 9901: admin listener (/healthz, /readyz, /metrics); its
# default address is 127.0.0.1:9901, reachable from outside the container only if the
# configuration sets admin.listen: 0.0.0.0:9901 (no authentication: do not publish it widely).
EXPOSE 8443 9901

# Runs inside the container, so the default loopback admin address works.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9901/healthz"]

# SIGTERM (docker stop) is a graceful stop: grace_period + shutdown_timeout (default 35 s) may
# exceed Docker's default 10 s stop timeout; use --stop-timeout / stop_grace_period.
STOPSIGNAL SIGTERM

# mimalloc returns memory freed by ended streams 100 ms later and asks for no transparent huge
# pages (docs/performance.md, "Memory").
ENV MIMALLOC_PURGE_DELAY=100 MIMALLOC_ALLOW_THP=0
ENTRYPOINT ["portcullis"]
CMD ["run", "-c", "/etc/portcullis/portcullis.yaml"]
