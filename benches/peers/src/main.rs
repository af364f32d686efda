//! gateway-8 (shared/WORKLOAD.md) through mware and its peers.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- \
//!     [--rows N] [--batch N] [--seed S] [--repeat K] [--threads N] \
//!     [--latency-rows N] [--only key,key,...]
//! ```
//!
//! Runs every implementation on the same generated input, checks each run's
//! checksum line against the hand-written fused loop's, and prints a table of
//! medians: throughput (ns per row over `--rows` rows fed in batches of
//! `--batch`) and single-request latency (ns per request, each request alone
//! through all eight stages, averaged over `--latency-rows` requests sent one
//! after another), with ratios against mware on one thread, statically
//! composed. A figure whose checksum differs from the hand loop's is refused
//! and the run exits non-zero.

mod bevy_peer;
mod dynchain;
mod mware_peer;
mod tower_peer;

use std::process::ExitCode;
use std::time::Duration;

use mware::gateway8::{Args, Checksum, Columns, Composition, Gateway, Metrics, TEST_VECTOR, hand_fused};

/// One implementation of gateway-8.
pub trait Peer {
    /// Short name for `--only`.
    fn key(&self) -> &'static str;
    /// Name in the table.
    fn label(&self) -> String;
    /// Starts a run of `total_rows` rows: quota counters and metrics to zero.
    fn reset(&mut self, total_rows: u64);
    /// Processes the rows of one throughput batch, writing the outputs into
    /// `cols`; returns the time spent processing (input and output copies
    /// between `cols` and an implementation's own storage excluded).
    fn batch(&mut self, cols: &mut Columns) -> Duration;
    /// Processes the rows of `cols` one request at a time, each alone
    /// through all eight stages; returns the whole time, copies included.
    /// Per-request peers do the same thing in both modes.
    fn singles(&mut self, cols: &mut Columns) -> Duration {
        self.batch(cols)
    }
    /// The metrics reduction of the current run.
    fn metrics(&self) -> Metrics;
}

const KEYS: &str = "hand, mware-1t-static, mware-1t-boxed, mware-nt-static, mware-nt-boxed, tower-rc, tower-arc, dyn, bevy-st, bevy-mt";

fn peers(all_threads_flag: usize, all_threads: usize) -> Vec<Box<dyn Peer>> {
    use mware_peer::MwarePeer;
    vec![
        mware_peer::HandFused::boxed(),
        MwarePeer::boxed("mware-1t-static", Composition::Static, 1, all_threads),
        MwarePeer::boxed("mware-1t-boxed", Composition::Boxed, 1, all_threads),
        MwarePeer::boxed("mware-nt-static", Composition::Static, all_threads_flag, all_threads),
        MwarePeer::boxed("mware-nt-boxed", Composition::Boxed, all_threads_flag, all_threads),
        tower_peer::rc(),
        tower_peer::arc(),
        dynchain::DynChain::boxed(),
        bevy_peer::BevyPeer::boxed(false),
        bevy_peer::BevyPeer::boxed(true),
    ]
}

/// Copies the input columns of `src` into `dst` (reusing its buffers) and
/// zeroes the outputs.
fn load(dst: &mut Columns, src: &Columns) {
    dst.user_id.clone_from(&src.user_id);
    dst.token.clone_from(&src.token);
    dst.route.clone_from(&src.route);
    dst.payload_len.clone_from(&src.payload_len);
    dst.ts_ns.clone_from(&src.ts_ns);
    let n = src.len();
    dst.status.resize(n, 0);
    dst.cost.resize(n, 0);
    dst.score.resize(n, 0.0);
    dst.latency_ns.resize(n, 0);
    dst.reset_outputs();
}

fn add_outputs(sum: &mut Checksum, c: &Columns) {
    sum.add_rows(&c.status, &c.cost, &c.score, &c.latency_ns);
}

/// The hand loop's checksum for a run over `batches`.
fn reference(batches: &[Columns], total_rows: u64) -> Checksum {
    let mut state = Gateway::new(total_rows);
    let mut sum = Checksum::default();
    let mut work = Columns::default();
    for b in batches {
        load(&mut work, b);
        hand_fused(&mut work, &mut state);
        add_outputs(&mut sum, &work);
    }
    sum.set_metrics(&state.metrics);
    sum
}

/// Medians and checksum verdicts of one implementation.
struct Results {
    label: String,
    key: &'static str,
    thr: Vec<Duration>,
    lat: Vec<Duration>,
    thr_sum: Option<Checksum>,
    lat_sum: Option<Checksum>,
    thr_ok: bool,
    lat_ok: bool,
}

/// The machine's load (other work on a shared machine skews every figure).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    let mid = times.len() / 2;
    if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2 }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let extra = " [--latency-rows N] [--only KEYS]";
    let mut args = match Args::parse(raw.clone(), &["--latency-rows", "--only"], &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peers: {e}\n{}\nkeys: {KEYS}", Args::usage("peers", extra));
            return ExitCode::from(2);
        }
    };
    if !raw.iter().any(|a| a == "--repeat") {
        args.repeat = 5;
    }
    let latency_rows: usize = match args.option("--latency-rows").map(|v| v.replace('_', "").parse()) {
        None => 16_384,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("peers: `--latency-rows` takes a number ≥ 1");
            return ExitCode::from(2);
        }
    };
    let only: Option<Vec<String>> =
        args.option("--only").map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let all_threads = args.effective_threads();
    let mut peers = peers(args.threads, all_threads);
    if let Some(only) = &only {
        if let Some(bad) = only.iter().find(|k| !peers.iter().any(|p| p.key() == k.as_str())) {
            eprintln!("peers: unknown key `{bad}`; keys: {KEYS}");
            return ExitCode::from(2);
        }
        peers.retain(|p| only.iter().any(|k| k == p.key()));
    }

    // Inputs, generated once.
    let batches: Vec<Columns> =
        args.batches().map(|(first, rows)| Columns::generate(args.seed, first, rows)).collect();
    let singles_input = Columns::generate(args.seed, 0, latency_rows);
    let thr_ref = reference(&batches, args.rows);
    let lat_ref = reference(std::slice::from_ref(&singles_input), latency_rows as u64);

    println!(
        "gateway-8 peers: rows={} batch={} seed={} repeat={} threads(all)={} latency-rows={}",
        args.rows, args.batch, args.seed, args.repeat, all_threads, latency_rows
    );
    println!("load average before: {}", loadavg());
    println!("reference (hand_fused), throughput run: {thr_ref}");
    if args.seed == 42 && args.rows == 1 << 20 {
        let ok = thr_ref.to_string() == TEST_VECTOR;
        println!("  WORKLOAD.md test vector: {}", if ok { "matches" } else { "DIFFERS" });
    }
    println!("reference (hand_fused), single-request run of {latency_rows} rows: {lat_ref}");

    let mut results: Vec<Results> = peers
        .iter()
        .map(|p| Results {
            label: p.label(),
            key: p.key(),
            thr: Vec::new(),
            lat: Vec::new(),
            thr_sum: None,
            lat_sum: None,
            thr_ok: true,
            lat_ok: true,
        })
        .collect();

    // Repeats round-robin over the peers, so a noisy neighbour on the
    // machine spreads over all of them rather than one.
    let mut work = Columns::default();
    for rep in 0..args.repeat {
        eprintln!("repeat {}/{}", rep + 1, args.repeat);
        for (peer, res) in peers.iter_mut().zip(&mut results) {
            // Throughput.
            peer.reset(args.rows);
            let mut sum = Checksum::default();
            let mut busy = Duration::ZERO;
            for b in &batches {
                load(&mut work, b);
                busy += peer.batch(&mut work);
                add_outputs(&mut sum, &work);
            }
            sum.set_metrics(&peer.metrics());
            res.thr_ok &= sum == thr_ref;
            res.thr_sum = Some(sum);
            res.thr.push(busy);

            // Single requests.
            peer.reset(latency_rows as u64);
            load(&mut work, &singles_input);
            let busy = peer.singles(&mut work);
            let mut sum = Checksum::default();
            add_outputs(&mut sum, &work);
            sum.set_metrics(&peer.metrics());
            res.lat_ok &= sum == lat_ref;
            res.lat_sum = Some(sum);
            res.lat.push(busy);
        }
    }

    println!("load average after: {}", loadavg());
    println!();
    let mut all_ok = true;
    for r in &results {
        for (what, sum, ok) in [("throughput", r.thr_sum, r.thr_ok), ("single", r.lat_sum, r.lat_ok)] {
            let sum = sum.expect("ran");
            println!("{:<16} {:<10} {} {}", r.key, what, if ok { "ok      " } else { "MISMATCH" }, sum);
            all_ok &= ok;
        }
    }

    // Medians.
    let thr: Vec<Option<f64>> = results
        .iter_mut()
        .map(|r| r.thr_ok.then(|| median(&mut r.thr).as_nanos() as f64 / args.rows as f64))
        .collect();
    let lat: Vec<Option<f64>> = results
        .iter_mut()
        .map(|r| r.lat_ok.then(|| median(&mut r.lat).as_nanos() as f64 / latency_rows as f64))
        .collect();
    let find = |key: &str, v: &[Option<f64>]| -> Option<f64> {
        results.iter().position(|r| r.key == key).and_then(|i| v[i])
    };
    let base_thr = find("mware-1t-static", &thr);
    let base_lat = find("mware-1t-static", &lat);

    println!();
    println!(
        "| implementation | throughput ns/row | × mware 1T static | single request ns | × mware 1T static |"
    );
    println!("|---|--:|--:|--:|--:|");
    let fmt = |v: Option<f64>, ok: bool| match (v, ok) {
        (Some(v), _) if v >= 100.0 => format!("{v:.0}"),
        (Some(v), _) => format!("{v:.2}"),
        (None, false) => "refused (checksum)".into(),
        (None, true) => "—".into(),
    };
    let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) if v / b >= 100.0 => format!("{:.0}×", v / b),
        (Some(v), Some(b)) => format!("{:.2}×", v / b),
        _ => "—".into(),
    };
    for (i, r) in results.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} |",
            r.label,
            fmt(thr[i], r.thr_ok),
            ratio(thr[i], base_thr),
            fmt(lat[i], r.lat_ok),
            ratio(lat[i], base_lat),
        );
    }
    println!();
    println!("× = the implementation's time ÷ mware's (1 thread, static); above 1 means mware is faster.");

    // Targets (peer time ÷ mware time, except where noted).
    let targets: [(&str, Option<f64>, f64); 8] = [
        (
            "1 thread: mware ≥ 2.4× faster than tower (Rc)",
            find("tower-rc", &thr).zip(base_thr).map(|(p, b)| p / b),
            2.4,
        ),
        (
            "1 thread: mware ≥ 7× faster than tower (Arc<Mutex>)",
            find("tower-arc", &thr).zip(base_thr).map(|(p, b)| p / b),
            7.0,
        ),
        (
            "1 thread: mware ≥ 150× faster than the dynamic chain",
            find("dyn", &thr).zip(base_thr).map(|(p, b)| p / b),
            150.0,
        ),
        (
            "1 thread: mware ≥ 3× faster than bevy (single-threaded executor)",
            find("bevy-st", &thr).zip(base_thr).map(|(p, b)| p / b),
            3.0,
        ),
        (
            "1 thread: mware ≥ 3× faster than bevy (multi-threaded executor)",
            find("bevy-mt", &thr).zip(base_thr).map(|(p, b)| p / b),
            3.0,
        ),
        (
            "all cores: mware (static) ≥ 4× faster than tower (Rc)",
            find("tower-rc", &thr).zip(find("mware-nt-static", &thr)).map(|(p, m)| p / m),
            4.0,
        ),
        (
            "single request: mware within 2× of tower (Rc) [tower ÷ mware ≥ 0.5]",
            find("tower-rc", &lat).zip(base_lat).map(|(p, b)| p / b),
            0.5,
        ),
        (
            "single request: mware ≥ 7× faster than bevy (single-threaded schedule)",
            find("bevy-st", &lat).zip(base_lat).map(|(p, b)| p / b),
            7.0,
        ),
    ];
    println!();
    println!("targets (measured ratio, peer ÷ mware):");
    for (what, got, want) in targets {
        match got {
            Some(g) => {
                println!("  {} {what}: {g:.2}× (want ≥ {want}×)", if g >= want { "met   " } else { "MISSED" })
            }
            None => println!("  n/a    {what}: not measured"),
        }
    }

    if all_ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("peers: some checksums differ from the hand loop's; their figures are refused");
        ExitCode::FAILURE
    }
}
