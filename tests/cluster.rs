//! gateway-8 on timely dataflow (feature `timely`): two processes of
//! `examples/cluster.rs` on 127.0.0.1, and one process with two workers,
//! print the checksum of the single-process run.
//!
//! The processes run under a deadline: a hang fails the test (both children
//! killed) instead of blocking it.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mware::Batch;
use mware::gateway8::{Args, Checksum, Composition, Fields, GatewayPipeline, TEST_VECTOR};

/// Rows of the run: the quota (700,000 per route) only starts rejecting
/// after about 800 K rows, so the cluster runs must get this far for the
/// per-route order to matter. The WORKLOAD.md test vector is for this size.
const ROWS: u64 = 1 << 20;
/// Rows per batch, i.e. per epoch.
const BATCH: usize = 65_536;
/// How long the processes of one run may take, connecting included.
const DEADLINE: Duration = Duration::from_secs(180);

/// The checksum of the single-process run: one mware pipeline over every
/// batch, as `examples/gateway.rs` does it.
fn single_process() -> Checksum {
    let args = Args { rows: ROWS, batch: BATCH, threads: 1, ..Args::default() };
    let (schema, fields) = Fields::schema();
    let gw = GatewayPipeline::build(&fields, &schema, args.rows, Composition::Static, |b| b.threads(1))
        .expect("gateway-8 builds");
    let mut batch = Batch::with_capacity(&schema, BATCH);
    let mut sum = Checksum::default();
    for (first, rows) in args.batches() {
        fields.fill(&mut batch, args.seed, first, rows).unwrap();
        gw.pipeline.run(&mut batch).unwrap();
        fields.add_to(&mut sum, &batch).unwrap();
    }
    sum.set_metrics(&gw.metrics.lock());
    sum
}

/// The example's binary, built with the test's own profile, features and
/// target directory (a no-op when `cargo test` has built it already).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile dir>/deps/cluster-<hash>
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("the test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut features = vec!["timely"];
    if cfg!(feature = "arrow") {
        features.push("arrow");
    }
    if cfg!(feature = "tracing") {
        features.push("tracing");
    }
    // Every feature the test itself was built with, so the build reuses
    // its library instead of compiling another copy (CI's `--all-features`).
    if cfg!(feature = "async") {
        features.push("async");
    }
    // `cargo test` builds examples with the test profile (`--release`: the
    // bench profile); the same profile here keeps every artifact fresh.
    let profile = if profile_dir.ends_with("release") { "bench" } else { "test" };
    let status = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", "cluster", "--profile", profile])
        .arg("--features")
        .arg(features.join(","))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building examples/cluster.rs failed: {status}");
    let bin = profile_dir.join("examples").join(format!("cluster{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

/// Two ports on 127.0.0.1 that were free a moment ago.
fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    [a.local_addr().unwrap().port(), b.local_addr().unwrap().port()]
}

/// A started process of the example; its output goes to files (no pipe
/// to fill, readable while it runs).
struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    /// What the process has printed to stdout so far.
    fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

/// A finished process: its exit status and output.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Starts the example over `rows` rows with `extra` flags (after the
/// gateway ones), its output in `dir/name.out` and `dir/name.err`.
fn spawn(bin: &Path, rows: u64, extra: &[&str], dir: &Path, name: &str) -> Proc {
    let (stdout, stderr) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let child = Command::new(bin)
        .args(["--rows", &rows.to_string(), "--batch", &BATCH.to_string(), "--seed", "42"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .spawn()
        .expect("the example starts");
    Proc { child, stdout, stderr }
}

/// Kills every process.
fn kill_all(procs: &mut [Proc]) {
    for p in procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

/// Waits for every process until [`DEADLINE`]; past it, kills them all and
/// fails.
fn wait_all(mut procs: Vec<Proc>, what: &str) -> Vec<Finished> {
    let start = Instant::now();
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; procs.len()];
    while statuses.iter().any(Option::is_none) {
        for (p, status) in procs.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                *status = p.child.try_wait().expect("waiting for a child");
            }
        }
        if start.elapsed() > DEADLINE {
            kill_all(&mut procs);
            panic!("{what}: still running after {DEADLINE:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    procs
        .into_iter()
        .zip(statuses)
        .map(|(p, status)| Finished {
            status: status.unwrap(),
            stdout: std::fs::read_to_string(&p.stdout).unwrap(),
            stderr: std::fs::read_to_string(&p.stderr).unwrap(),
        })
        .collect()
}

/// The checksum line of a process's output, if it printed one.
fn checksum_line(out: &Finished) -> Option<&str> {
    out.stdout.lines().find(|l| l.starts_with("checksum "))
}

/// A host file for two processes on 127.0.0.1 with fresh ports.
fn host_file(dir: &Path) -> String {
    let ports = free_ports();
    let hosts = dir.join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    hosts.to_str().unwrap().to_string()
}

fn run_two_processes(bin: &Path, dir: &Path) -> Vec<Finished> {
    let hosts = host_file(dir);
    let p0 = spawn(bin, ROWS, &["-n", "2", "-p", "0", "-h", &hosts], dir, "p0");
    let p1 = spawn(bin, ROWS, &["-n", "2", "-p", "1", "-h", &hosts], dir, "p1");
    wait_all(vec![p0, p1], "2 processes × 1 worker")
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mware-cluster-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cluster_checksum_equals_single_process() {
    let expected = single_process().to_string();
    assert_eq!(expected, TEST_VECTOR, "the single-process run disagrees with WORKLOAD.md");
    let bin = example_binary();
    let dir = scratch("checksum");

    // 2 processes × 1 worker over TCP on 127.0.0.1. A port taken between
    // probing and binding fails the start; one retry with fresh ports.
    let mut outs = run_two_processes(&bin, &dir);
    if outs.iter().any(|o| !o.status.success()) {
        eprintln!("first 2-process attempt failed, retrying with fresh ports: {:?}", outs[0].stderr);
        outs = run_two_processes(&bin, &dir);
    }
    for (p, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "process {p} failed ({}):\n{}\n{}", out.status, out.stdout, out.stderr);
    }
    assert_eq!(checksum_line(&outs[0]), Some(expected.as_str()), "process 0:\n{}", outs[0].stdout);
    assert_eq!(checksum_line(&outs[1]), None, "only process 0 prints the checksum");
    assert!(outs[0].stdout.contains("workers=2 processes=2"), "{}", outs[0].stdout);

    // 1 process × 2 workers.
    let outs = wait_all(vec![spawn(&bin, ROWS, &["-w", "2"], &dir, "w2")], "1 process × 2 workers");
    assert!(outs[0].status.success(), "{}\n{}", outs[0].stdout, outs[0].stderr);
    assert_eq!(checksum_line(&outs[0]), Some(expected.as_str()), "{}", outs[0].stdout);
    assert!(outs[0].stdout.contains("workers=2 processes=1"), "{}", outs[0].stdout);

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn in_process_workers_agree_with_single_process() {
    // The library entry point without the example: 3 workers (routes do not
    // split evenly), small batches (many epochs, most rows crossing
    // workers), a row count that is no multiple of the batch, another seed,
    // and enough rows for the quota to reject.
    let args = Args { rows: 900_001, batch: 4_096, seed: 7, ..Args::default() };
    let (schema, fields) = Fields::schema();
    let gw =
        GatewayPipeline::build(&fields, &schema, args.rows, Composition::Static, |b| b.threads(1)).unwrap();
    let mut batch = Batch::new(&schema);
    let mut expected = Checksum::default();
    for (first, rows) in args.batches() {
        fields.fill(&mut batch, args.seed, first, rows).unwrap();
        gw.pipeline.run(&mut batch).unwrap();
        fields.add_to(&mut expected, &batch).unwrap();
    }
    expected.set_metrics(&gw.metrics.lock());
    let shared = args.clone();
    let guards =
        timely::execute(timely::Config::process(3), move |w| mware::timely::gateway::run_worker(w, &shared))
            .unwrap();
    let runs: Vec<_> = guards.join().into_iter().map(|r| r.unwrap().unwrap()).collect();
    let run = runs[0].expect("worker 0 reports");
    assert!(runs[1..].iter().all(Option::is_none));
    assert_eq!(run.workers, 3);
    assert_eq!(run.totals.rows, args.rows);
    assert!(expected.hist[3] > 0, "the quota rejects some rows");
    assert_eq!(run.totals.checksum(), expected);
    assert_eq!(run.totals.metrics, *gw.metrics.lock(), "the per-route histogram matches too");
}

#[test]
fn a_dead_peer_ends_the_computation() {
    // The documented limit: no failover. Process 1 is killed mid-run;
    // process 0 must end on its own, not hang. 120 M rows take far longer
    // than the test waits before the kill, and keep the checksum's latency
    // sums (about 500 × rows² ns) below u64::MAX.
    let bin = example_binary();
    let dir = scratch("dead-peer");
    let hosts = host_file(&dir);
    let rows = 120_000_000;
    // `-r`: timely reports "initialization complete" once connected.
    let p0 = spawn(&bin, rows, &["-n", "2", "-p", "0", "-h", &hosts, "-r"], &dir, "p0");
    let p1 = spawn(&bin, rows, &["-n", "2", "-p", "1", "-h", &hosts, "-r"], &dir, "p1");
    let mut procs = vec![p0, p1];
    let start = Instant::now();
    while !procs.iter().all(|p| p.stdout_so_far().contains("initialization complete")) {
        if start.elapsed() > DEADLINE {
            kill_all(&mut procs);
            panic!("the two processes did not connect within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let rows flow between them for a moment.
    std::thread::sleep(Duration::from_millis(500));
    let mut p1 = procs.pop().unwrap();
    assert!(p1.child.try_wait().unwrap().is_none(), "process 1 ended early");
    kill_all(std::slice::from_mut(&mut p1));
    let out = wait_all(procs, "process 0 after its peer died").pop().unwrap();
    assert!(!out.status.success(), "process 0 succeeded without its peer:\n{}", out.stdout);
    // Either the example's own error (exit 1), or, when timely panics again
    // while unwinding (a race between its threads), an abort.
    if out.status.code() == Some(1) {
        assert!(out.stderr.contains("restart every process"), "{}", out.stderr);
    }
    assert_eq!(checksum_line(&out), None);
    let _ = std::fs::remove_dir_all(&dir);
}
