#!/usr/bin/env bash
# Profiling off vs no profiling code at all, on gateway-8 (BENCHMARKS.md §6).
#
# Builds benches/gateway8.rs twice from the current commit: as is (profiling
# off), and with every profiling hook cut out of the executor (the stop
# counters in RowCtl and Rows, and the `prof` switch forced to false). Then
# runs `mware_static` at 4,096 and 65,536-row batches alternately, ROUNDS
# times each, and prints the median of criterion's estimates per build and
# their ratio.
#
#   bash scripts/profiling_off_vs_none.sh        # ROUNDS=3 by default
set -euo pipefail
root=$(git rev-parse --show-toplevel)
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/none" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/none" HEAD

cut() {
    local file=$1 from=$2 to=$3
    grep -qF -- "$from" "$file" || { echo "pattern not found in $file: $from" >&2; exit 1; }
    python3 - "$file" "$from" "$to" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
open(path, "w").write(text.replace(old, new))
PY
}
cd "$work/none"
cut src/control.rs "        if !self.stops.is_null() {" "        if false && !self.stops.is_null() {"
cut src/stage.rs "        self.stops.record(self.depth, before, self.states[i]);" "        let _ = before;"
cut src/exec.rs "let prof = p.profiling.load(Ordering::Relaxed);" "let prof = false;"

build() {
    (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --bench gateway8 --no-run 2>&1) |
        sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1
}
with=$(build "$root")
none=$(build "$work/none")
[ -n "$with" ] && [ -n "$none" ] || { echo "build failed" >&2; exit 1; }
cp "$root/$with" "$work/with" 2>/dev/null || cp "$with" "$work/with"
cp "$root/$none" "$work/none.bin" 2>/dev/null || cp "$none" "$work/none.bin"

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
estimate() { # binary, filter -> ms per iteration (criterion's middle estimate)
    "$1" --bench "$2" --noplot 2>/dev/null | awk '/time:/ {v=$4; u=$5; if (u ~ /^µs/) v/=1000; if (u ~ /^s/) v*=1000; print v; exit}'
}
for batch in 4096 65536; do
    filter="gateway8/mware_static/$batch\$"
    : > "$work/w"; : > "$work/n"
    for _ in $(seq "$rounds"); do
        estimate "$work/with" "$filter" >> "$work/w"
        estimate "$work/none.bin" "$filter" >> "$work/n"
    done
    w=$(median < "$work/w"); n=$(median < "$work/n")
    awk -v b="$batch" -v w="$w" -v n="$n" \
        'BEGIN {printf "batch %6d: off %.3f ms, no profiling code %.3f ms, off/none %.3f\n", b, w, n, w / n}'
done
