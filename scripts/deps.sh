#!/usr/bin/env bash
# Installs the Debian packages Portcullis needs to build and test (idempotent).
set -euo pipefail

# libxmlsec1-dev/libxml2-dev: SAML signature checks (samael's bindings to xmlsec);
# xmlsec1 and python3-venv: the SAML IdP of the tests (pysaml2) and its forged responses.
# redis-server/redis-tools: the shared store of the replica tests (store.kind: redis).
# rsyslog/rsyslog-gnutls: the SIEM receiver of the audit sink tests (RFC 5425 over TLS).
# chromium/chromium-driver: the security console's browser tests (headless, over WebDriver).
packages=(pkg-config cmake gcc libclang-dev libssl-dev openssl curl ca-certificates procps
  libxml2-dev libxmlsec1-dev libxmlsec1-openssl xmlsec1 python3 python3-venv
  redis-server redis-tools rsyslog rsyslog-gnutls chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The integration tests run a real OpenID Provider (oidc-provider) on Node.js.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "Installing Node.js from Debian"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: no Rust toolchain found. Install one with rustup (https://rustup.rs), Rust 1.85 or newer." >&2
  exit 1
fi
