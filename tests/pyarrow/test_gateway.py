#!/usr/bin/env python3
"""pyarrow on the other side of mware's Arrow IPC files.

usage: test_gateway.py PATH/TO/replay   (the `replay` example, built with --features arrow)

1. pyarrow writes gateway-8 input (WORKLOAD.md, seed 42, 1,048,576 rows, with
   numpy's splitmix64); mware replays it from the mapping to the test vector,
   reading every input column in place.
2. mware replays its own log and writes the processed batches; pyarrow reads
   that file and finds the checksum line's column sums, and mware's
   per-column CRC-32s (zlib's CRC-32 over the same buffer bytes).
3. A file cut short is rejected with an error on stderr and a non-zero exit,
   never a panic.

Prints `pyarrow: N passed, M failed` and exits non-zero on a failure.
"""

import os
import re
import subprocess
import sys
import tempfile
import traceback
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

ROWS = 1 << 20
BATCH = 65_536
SEED = 42
TEST_VECTOR = (
    "checksum status=270899595 cost=58016816 score_milli=66688861966 latency=550803865600000 "
    "lat_sum=[484968501884000, 5528000949000, 1348598838000, 58958763929000] "
    "hist=[779921, 10580, 2585, 255490]"
)


def mix(z):
    """splitmix64 finalizer over a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def gateway_input(first, rows, seed=SEED):
    i = np.arange(first, first + rows, dtype=np.uint64)
    user = mix(np.uint64(seed) ^ i) % np.uint64(100_000)
    token = mix(user)
    bad = mix(i ^ np.uint64(0xA5A5)) % np.uint64(100) == 0
    token[bad] ^= np.uint64(1)
    route = (mix(i ^ np.uint64(0x5A5A)) % np.uint64(64)).astype(np.uint16)
    big = mix(i ^ np.uint64(0x7E7E)) % np.uint64(200) == 0
    p = mix(i ^ np.uint64(0x3C3C))
    payload = np.where(big, p % np.uint64(1 << 21), p % np.uint64(65_536)).astype(np.uint32)
    ts = np.uint64(1_000_000_000) + i * np.uint64(1_000)
    return pa.record_batch(
        {
            "user_id": pa.array(user, pa.uint64()),
            "token": pa.array(token, pa.uint64()),
            "route": pa.array(route, pa.uint16()),
            "payload_len": pa.array(payload, pa.uint32()),
            "ts_ns": pa.array(ts, pa.uint64()),
            # A column mware's schema does not have: never decoded.
            "note": pa.array([None if k % 7 else f"row {first + k}" for k in range(rows)], pa.string()),
        }
    )


def run(replay, *args, check=True):
    p = subprocess.run([replay, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"replay {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p


def line(stdout, prefix):
    for ln in stdout.splitlines():
        if ln.startswith(prefix):
            return ln
    raise AssertionError(f"no `{prefix}` line in:\n{stdout}")


def test_pyarrow_writes_mware_replays(replay, tmp):
    path = os.path.join(tmp, "from-pyarrow.arrow")
    with pa.OSFile(path, "wb") as sink:
        schema = gateway_input(0, 1).schema
        with ipc.new_file(sink, schema) as w:
            for first in range(0, ROWS, BATCH):
                w.write_batch(gateway_input(first, min(BATCH, ROWS - first)))
    out = run(replay, "--replay-only", "--file", path, "--threads", "2").stdout
    got = line(out, "checksum ")
    assert got == TEST_VECTOR, f"\n{got}\n!=\n{TEST_VECTOR}"
    report = line(out, "replay open_ms")
    assert "columns_copied=0" in report and "inputs_never_copied=true" in report, report
    assert "batches_verified=0/16" in report, report  # pyarrow stores no mware checksums
    assert line(out, "throughput ").startswith(f"throughput rows={ROWS} batch={BATCH} ")


def test_pyarrow_reads_mware_output(replay, tmp):
    log = os.path.join(tmp, "log.arrow")
    processed = os.path.join(tmp, "processed.arrow")
    out = run(replay, "--rows", ROWS, "--file", log, "--keep", "--output", processed).stdout
    assert line(out, "checksum ") == TEST_VECTOR
    sums = dict(re.findall(r"(\w+)=(\d+)", line(out, "checksum ")))

    # The request log mware wrote: the five input columns, equal to numpy's.
    log_table = ipc.open_file(log).read_all()
    assert log_table.column_names == ["user_id", "token", "route", "payload_len", "ts_ns"]
    expected = gateway_input(0, 4096)
    for name in log_table.column_names:
        got = log_table.column(name).slice(0, 4096).to_numpy()
        assert np.array_equal(got, expected.column(name).to_numpy()), name

    # The processed output: every field plus the row control columns.
    reader = ipc.open_file(processed)
    table = reader.read_all()
    assert table.num_rows == ROWS
    assert table.schema.field("mware_status").type == pa.uint16()
    status = table.column("mware_status").to_numpy().astype(np.uint64)
    cost = table.column("cost").to_numpy().astype(np.uint64)
    score = table.column("score").to_numpy().astype(np.float64)
    latency = table.column("latency_ns").to_numpy()
    assert int(status.sum()) == int(sums["status"])
    assert int(cost.sum()) == int(sums["cost"])
    assert int(np.floor(score * 1000.0 + 0.5).astype(np.uint64).sum()) == int(sums["score_milli"])
    assert int(latency.sum(dtype=np.uint64)) == int(sums["latency"])
    classes = {200: 779921, 401: 10580, 413: 2585, 429: 255490}
    for code, n in classes.items():
        assert int((status == code).sum()) == n, code
    assert table.column("mware_stop_depth").null_count == classes[200]
    assert table.column("mware_error").null_count == ROWS

    # mware's per-record-batch checksums, checked with zlib's CRC-32: for a
    # column without nulls they cover exactly its values buffer.
    for i in range(reader.num_record_batches):
        batch, meta = reader.get_batch_with_custom_metadata(i)
        crcs = meta[b"mware.crc32"].decode().split(",")
        assert len(crcs) == batch.num_columns
        for c, name in enumerate(batch.schema.names):
            col = batch.column(c)
            if col.null_count or not pa.types.is_primitive(col.type) or pa.types.is_boolean(col.type):
                continue
            values = col.buffers()[1]
            assert f"{zlib.crc32(values):08x}" == crcs[c], (i, name)


def test_truncated_file_is_rejected(replay, tmp):
    log = os.path.join(tmp, "small.arrow")
    run(replay, "--rows", 200_000, "--batch", 50_000, "--file", log, "--keep")
    data = open(log, "rb").read()
    cut = os.path.join(tmp, "cut.arrow")
    with open(cut, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    p = run(replay, "--replay-only", "--file", cut, check=False)
    assert p.returncode == 1, p.returncode
    assert "truncated" in p.stderr and "panicked" not in p.stderr, p.stderr
    p = run(replay, "--replay-only", "--recover", "--file", cut)
    assert "recovered 2 complete record batches" in p.stderr, p.stderr
    # pyarrow agrees the cut file is not a complete Arrow file.
    try:
        ipc.open_file(cut).read_all()
        raise AssertionError("pyarrow read a truncated file")
    except pa.ArrowInvalid:
        pass


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    replay = sys.argv[1]
    tests = [test_pyarrow_writes_mware_replays, test_pyarrow_reads_mware_output, test_truncated_file_is_rejected]
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="mware-pyarrow-") as tmp:
        for t in tests:
            try:
                t(replay, tmp)
                print(f"ok    {t.__name__}")
                passed += 1
            except Exception:  # noqa: BLE001 - report every failure
                print(f"FAIL  {t.__name__}")
                traceback.print_exc()
                failed += 1
    print(f"pyarrow {pa.__version__}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
