#!/usr/bin/env bash
# The single command that runs every test (README.md). Release mode: the round-trip tests
# move gigabytes and the FUSE tests want the real read path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --all-targets
exec cargo test --release --locked --all-targets -- --test-threads="${BFCFS_TEST_THREADS:-4}"
