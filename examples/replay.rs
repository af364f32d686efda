//! Replays a gateway-8 request log, an Arrow IPC file, through the pipeline
//! straight from a memory mapping.
//!
//! ```text
//! cargo run --release --features arrow --example replay -- \
//!     [--rows N] [--batch N] [--threads N] [--seed S] [--file PATH] [--keep]
//!     [--replay-only] [--output PATH] [--no-verify] [--recover] [--populate]
//! ```
//!
//! Writes gateway-8 input (WORKLOAD.md; 16 Mi rows by default, `--batch`
//! rows per record batch) to `--file` (a temporary file unless given;
//! removed afterwards unless `--keep`), then maps it, verifies each record
//! batch's checksums (`--no-verify` skips them) and runs every batch through
//! the pipeline with its input columns read in place from the mapping. With
//! `--replay-only` it replays an existing `--file` (from mware, pyarrow, …)
//! without writing it; `--recover` reads a file cut short up to its last
//! complete record batch; `--output PATH` writes the processed batches
//! (every field plus the row control columns) to another Arrow file.
//!
//! Prints a report, the workload's checksum line (equal to
//! `examples/gateway.rs`'s for the same rows and seed) and
//! `throughput rows=N batch=B threads=T ns_per_row=X`, where X is the replay
//! time (check, decode, import, run) per row. A file it rejects makes it
//! exit with status 1 and the error on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mware::Batch;
use mware::arrow::{
    Checksums, ExportOptions, ImportOptions, ImportStats, MappedFile, ReadOptions, WriteOptions, Writer,
};
use mware::gateway8::{Args, Checksum, Composition, Fields, GatewayPipeline};

/// The columns of a gateway-8 request log: the workload's inputs.
const INPUTS: [&str; 5] = ["user_id", "token", "route", "payload_len", "ts_ns"];
const DEFAULT_ROWS: u64 = 16 << 20;

fn main() -> ExitCode {
    let extra =
        " [--file PATH] [--keep] [--replay-only] [--output PATH] [--no-verify] [--recover] [--populate]";
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let switches = ["--keep", "--replay-only", "--no-verify", "--recover", "--populate"];
    let mut args = match Args::parse(raw.clone(), &["--file", "--output"], &switches) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "replay: {e}\n{}\n(replay's default --rows is {DEFAULT_ROWS})",
                Args::usage("replay", extra)
            );
            return ExitCode::from(2);
        }
    };
    if !raw.iter().any(|a| a == "--rows") {
        args.rows = DEFAULT_ROWS;
    }
    if args.switch("--replay-only") && args.option("--file").is_none() {
        eprintln!("replay: --replay-only needs --file PATH");
        return ExitCode::from(2);
    }
    // The reader catches any panic inside the Arrow decoder and reports it as
    // an error; keep such a caught panic from printing a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_arrow = info.location().is_some_and(|l| l.file().contains("arrow-"));
        if !in_arrow {
            default_hook(info);
        }
    }));
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    let template = format!("{what:>8} [{{bar:40}}] {{human_pos}}/{{human_len}} rows {{per_sec}} eta {{eta}}");
    bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
    bar
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (schema, fields) = Fields::schema();
    let path = match args.option("--file") {
        Some(p) => PathBuf::from(p),
        None => std::env::temp_dir().join(format!("mware-replay-{}.arrow", std::process::id())),
    };
    let replay_only = args.switch("--replay-only");
    let mut batch = Batch::with_capacity(&schema, args.batch.min(args.rows as usize));

    // 1. Write the request log.
    let mut write_time = Duration::ZERO;
    if !replay_only {
        let t = Instant::now();
        let bar = progress(args.rows, "write");
        let inputs = ExportOptions::new().control(false).fields(INPUTS);
        let mut w = Writer::create(&path, &schema, WriteOptions::new().export(inputs))?;
        for (first, rows) in args.batches() {
            fields.fill(&mut batch, args.seed, first, rows)?;
            w.write(&mut batch)?;
            bar.inc(rows as u64);
        }
        w.finish()?;
        bar.finish_and_clear();
        write_time = t.elapsed();
    }
    let result = replay(args, &path, &schema, &fields, &mut batch, write_time);
    if !replay_only && !args.switch("--keep") {
        std::fs::remove_file(&path).ok();
    }
    result
}

fn replay(
    args: &Args,
    path: &std::path::Path,
    schema: &mware::Schema,
    fields: &Fields,
    batch: &mut Batch,
    write_time: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    // 2. Map and check it.
    let t_open = Instant::now();
    let checksums = if args.switch("--no-verify") { Checksums::Skip } else { Checksums::Verify };
    let options = ReadOptions::new()
        .checksums(checksums)
        .recover(args.switch("--recover"))
        .populate(args.switch("--populate"));
    let file = MappedFile::open_with(path, options)?;
    if let Some(r) = file.recovery() {
        eprintln!(
            "replay: recovered {} complete record batches ({} bytes dropped): {}",
            r.batches, r.dropped_bytes, r.reason
        );
    }
    let batch_rows = file.batch_rows()?;
    let rows: u64 = batch_rows.iter().map(|&r| r as u64).sum();
    let open_time = t_open.elapsed();
    if !args.switch("--replay-only") && rows != args.rows {
        return Err(format!("the file holds {rows} rows, {} were written", args.rows).into());
    }

    // 3. Replay it through the pipeline from the mapping.
    let gw = GatewayPipeline::build(fields, schema, rows, Composition::Static, |b| b.threads(args.threads))?;
    let replay = file.bind(schema, &ImportOptions::new().for_pipeline(&gw.pipeline))?;
    let mut output = match args.option("--output") {
        Some(p) => Some(Writer::create(p, schema, WriteOptions::new())?),
        None => None,
    };
    let bar = progress(rows, "replay");
    let mut sum = Checksum::default();
    let mut stats = ImportStats::default();
    let mut verified = 0;
    let mut run_time = Duration::ZERO;
    let mut read_only_in_place = true;
    let t = Instant::now();
    for i in 0..replay.len() {
        let s = replay.read(i, batch)?;
        stats += s.import;
        verified += s.verified as usize;
        let t_run = Instant::now();
        gw.pipeline.run(batch)?;
        run_time += t_run.elapsed();
        read_only_in_place &= INPUTS.iter().all(|n| {
            let (index, _) = schema.field_named(n).expect("input field");
            batch.is_shared(index)
        });
        fields.add_to(&mut sum, batch)?;
        if let Some(w) = &mut output {
            w.write(batch)?;
        }
        bar.inc(batch.len() as u64);
    }
    let replay_time = t.elapsed();
    bar.finish_and_clear();
    if let Some(w) = output {
        w.finish()?;
    }
    sum.set_metrics(&gw.metrics.lock());

    let bytes = file.bytes().len() as u64;
    let per_row = |d: Duration| d.as_nanos() as f64 / rows.max(1) as f64;
    let common = batch_rows.first().copied().unwrap_or(0);
    println!(
        "file path={} bytes={bytes} record_batches={} rows={rows} mapped={}",
        path.display(),
        file.num_batches(),
        file.is_mapped()
    );
    if !write_time.is_zero() {
        println!(
            "write seconds={:.3} MB_per_s={:.0}",
            write_time.as_secs_f64(),
            bytes as f64 / 1e6 / write_time.as_secs_f64()
        );
    }
    println!(
        "replay open_ms={:.3} batches_verified={verified}/{} columns_in_place={} columns_copied={} \
         columns_zeroed={} inputs_never_copied={read_only_in_place}",
        open_time.as_secs_f64() * 1e3,
        file.num_batches(),
        stats.zero_copy,
        stats.copied,
        stats.zeroed,
    );
    println!(
        "replay seconds={:.3} ns_per_row={:.3} pipeline_ns_per_row={:.3} read_ns_per_row={:.3}",
        replay_time.as_secs_f64(),
        per_row(replay_time),
        per_row(run_time),
        per_row(replay_time.saturating_sub(run_time)),
    );
    println!("{sum}");
    println!(
        "throughput rows={rows} batch={common} threads={} ns_per_row={:.3}",
        args.effective_threads(),
        per_row(replay_time)
    );
    Ok(())
}
