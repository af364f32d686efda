#!/usr/bin/env bash
# Graphviz for the plan drawings: installs `dot` when it is missing, renders
# every plan the DOT test draws with `dot -Tsvg` (tests/observability.rs only
# checks the DOT's structure without it), and checks that the committed
# docs/gateway8-plan*.dot still match what the code draws.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dot >/dev/null 2>&1; then
    echo "graphviz.sh: installing graphviz"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
fi
dot -V

cargo test --test observability dot_output_parses

# Regenerates docs/gateway8-plan*.{dot,svg} in this checkout; the DOT text
# must be what is committed (the SVG depends on the Graphviz version).
cargo test --test observability render_gateway8_plan -- --ignored
if ! git diff --exit-code -- docs/gateway8-plan.dot docs/gateway8-plan-parallel.dot; then
    echo "graphviz.sh: docs/gateway8-plan*.dot are stale: run" >&2
    echo "  cargo test --test observability render_gateway8_plan -- --ignored" >&2
    echo "and commit docs/." >&2
    exit 1
fi
