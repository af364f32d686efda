#!/usr/bin/env bash
# Compiles the peers benchmark crate (benches/peers: gateway-8 through mware,
# tower, a dynamic chain and bevy_ecs) so it cannot rot. It is its own
# workspace, so the root `cargo test` never builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo check --manifest-path benches/peers/Cargo.toml
