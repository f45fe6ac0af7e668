#!/usr/bin/env bash
# Installs the Debian packages Portcullis needs to build and test (idempotent).
set -euo pipefail

packages=(pkg-config cmake gcc libclang-dev libssl-dev openssl curl ca-certificates procps)
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
