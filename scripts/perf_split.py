#!/usr/bin/env python3
"""Splits the samples of `perf record -e cpu-clock` by function instance.

Generic Rust code compiles to many instances of one function (every
`Chain<L>::walk` of every chain and span), which `perf report` merges under
one name. This prints the samples of each instance of the profiled binary
by address, labelled with the marker constants its machine code contains
(gateway-8's quota limit, 700,000 = 0xaae60, names the walks that run the
quota stage), and the share of each thread's samples spent in the kernel.

The software clock needs no hardware counters, so it works on virtual
machines where `perf stat` reports cycles as "not supported".

    perf record -e cpu-clock -o perf.data -- target/release/deps/stream-HASH --bench paired
    python3 scripts/perf_split.py perf.data target/release/deps/stream-HASH \\
        --mark quota=0xaae6 --mark status_401=0x191 --mark mix=0xbf58476d1ce4e5b9
"""

import argparse
import bisect
import collections
import os
import re
import subprocess


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def text_mapping(data, binary):
    """The runtime base of the binary's executable mapping, and how file
    offsets in it translate to the addresses `nm` prints."""
    events = run("perf", "script", "-i", data, "--show-mmap-events")
    m = re.search(r"\[(0x[0-9a-f]+)\((0x[0-9a-f]+)\) @ (0x[0-9a-f]+) .*r-xp " + re.escape(binary), events)
    if m is None:
        raise SystemExit(f"{binary} has no executable mapping in {data} (pass the path perf recorded)")
    base, size, offset = (int(g, 16) for g in m.groups())
    for line in run("readelf", "-lW", binary).splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[-2]:
            segment_offset, segment_vaddr = int(f[1], 16), int(f[2], 16)
            return base, size, offset - segment_offset + segment_vaddr
    raise SystemExit(f"{binary} has no executable segment")


def functions(binary):
    """(start, size, demangled name) of every function, by start address."""
    out = []
    for line in run("nm", "-S", "-C", "--defined-only", binary).splitlines():
        f = line.split(None, 3)
        if len(f) == 4 and f[2] in "tTwW":
            out.append((int(f[0], 16), int(f[1], 16), f[3]))
    return sorted(out)


def marks_in(binary, start, size, marks):
    code = run("objdump", "-d", "--no-show-raw-insn", binary, f"--start-address={start}", f"--stop-address={start + size}")
    return [name for name, value in marks if value in code]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="perf.data written by perf record -e cpu-clock")
    ap.add_argument("binary", help="the profiled binary, as perf recorded its path")
    ap.add_argument("--mark", action="append", default=[], metavar="NAME=HEX",
                    help="label instances whose code contains this hex constant (a prefix of it will do)")
    ap.add_argument("--top", type=int, default=15, help="instances to print")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    marks = [(n, v.lower()) for n, v in (m.split("=", 1) for m in args.mark)]
    base, size, to_vaddr = text_mapping(args.data, binary)
    funcs = functions(binary)
    starts = [f[0] for f in funcs]

    per_instance = collections.Counter()
    per_thread = collections.defaultdict(collections.Counter)
    total = 0
    for line in run("perf", "script", "-i", args.data, "-F", "comm,ip").splitlines():
        f = line.split()
        if len(f) < 2:
            continue
        comm, ip = " ".join(f[:-1]), int(f[-1], 16)
        # Threads numbered by the runner (mware-stream-0, -1, ...) count as one.
        comm = re.sub(r"-\d+$", "", comm)
        total += 1
        kernel = ip >= 0xFFFF800000000000
        per_thread[comm]["kernel" if kernel else "user"] += 1
        if not kernel and base <= ip < base + size:
            vaddr = ip - base + to_vaddr
            i = bisect.bisect_right(starts, vaddr) - 1
            if i >= 0 and vaddr < funcs[i][0] + funcs[i][1]:
                per_instance[i] += 1

    print(f"{total} samples")
    print("by thread: kernel share")
    for comm, c in sorted(per_thread.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(c.values())
        print(f"  {comm:24} {n:9d} samples, {100 * c['kernel'] / n:5.1f} % in the kernel")
    print("by function instance (address, size, samples, share of all samples)")
    for i, n in per_instance.most_common(args.top):
        start, length, name = funcs[i]
        labels = marks_in(binary, start, length, marks) if marks else []
        tag = f"  [{', '.join(labels)}]" if labels else ""
        print(f"  {start:#10x} {length:#7x} {n:9d} {100 * n / total:5.1f} %  {name[:70]}{tag}")


if __name__ == "__main__":
    main()
