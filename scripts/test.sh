#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Debian + npm peers), checks
# formatting and lints, builds every binary the integration tests start, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A one-shot build gains nothing from incremental caches; they only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
scripts/install-test-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo build (binaries used by integration tests)"
cargo build --workspace --bins --all-features
echo "== cargo test"
cargo test --workspace --all-features --no-fail-fast -- --test-threads="${TEST_THREADS:-2}"
