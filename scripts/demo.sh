#!/usr/bin/env bash
# Starts the demo: Portcullis on https://127.0.0.1:8443 in front of a sample chat app.
# Installs what it needs, builds once, then runs `portcullis demo` (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --locked
exec target/release/portcullis demo "$@"
