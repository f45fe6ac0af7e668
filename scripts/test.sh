#!/usr/bin/env bash
# The full test suite: formatting, lints, unit and end-to-end tests, and `portcullis check`
# on every example configuration. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

echo "== layers: no module cycle, no pingora in the security core"
python3 scripts/layers.py

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

echo "== test identity providers (npm ci, pip install)"
(cd tests/idp/oidc && npm ci --no-audit --no-fund --loglevel=error)
if [ ! -x tests/idp/saml/.venv/bin/python ]; then
  python3 -m venv tests/idp/saml/.venv
fi
tests/idp/saml/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/idp/saml/requirements.txt

echo "== cargo test"
cargo test --locked
echo "console screenshots (browser test): ${CARGO_TARGET_DIR:-target}/tmp/console-screenshots"
ls "${CARGO_TARGET_DIR:-target}/tmp/console-screenshots" 2>/dev/null || true

echo "== portcullis check conf/*.yaml"
bin="${CARGO_TARGET_DIR:-target}/debug/portcullis"
"$bin" keys dev-cert --out certs/dev >/dev/null
# The examples reference their secrets through these variables.
eval "$("$bin" keys generate | grep -v '^#' | sed 's/^/export /')"
export OIDC_CLIENT_SECRET=example-client-secret INTROSPECTION_CLIENT_SECRET=example-introspection-secret
export HEC_AUTHORIZATION="Splunk example-token" PORTCULLIS_ADMIN_TOKEN=example-admin-token-0123456789abcdef
status=0
for f in conf/*.yaml; do
  if "$bin" check -c "$f" >/dev/null; then
    echo "ok   $f"
  else
    echo "FAIL $f"
    "$bin" check -c "$f" || true
    status=1
  fi
done
exit $status
