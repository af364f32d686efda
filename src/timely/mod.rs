//! Scale-out on [timely dataflow](https://docs.rs/timely): an mware
//! pipeline as one operator of a timely dataflow, across worker threads and
//! processes (feature `timely`).
//!
//! When one machine is not enough, run mware inside an existing distributed
//! engine rather than anything home-made. Timely dataflow is the Rust one:
//! it starts the workers (`-w` threads per process, `-n` processes, `-p`
//! this process's index, `-h` a host file of `host:port` lines), moves
//! records between them and tracks progress (which timestamps are
//! complete). This module adds:
//!
//! - [`run_pipeline`]: runs a built [`Pipeline`](crate::Pipeline) over a
//!   timely stream of row records, which the operator collects into
//!   batches. Each worker owns its own pipeline instance (build it inside
//!   the worker closure). Rows are exchanged by key ([`RowCodec::key`])
//!   before the pipeline, so keyed state of a sequential stage (the
//!   gateway-8 quota, per route) sees every row of its keys; order within a
//!   key is restored by stashing rows per timestamp (epoch) and running
//!   them sorted by [`RowCodec::order`] once the frontier has passed the
//!   epoch, epochs in order.
//! - [`fold_at_leader`]: combines per-worker partials (a reduction such as
//!   the gateway-8 metrics, checksum sums) on worker 0 through the dataflow.
//! - [`gateway`]: gateway-8 on top of both, as `examples/cluster.rs` runs
//!   it; its checksum equals the single-process run's for any number of
//!   workers and processes.
//!
//! ```
//! use mware::gateway8::Args;
//! use mware::timely::gateway::run_worker;
//!
//! // Two worker threads in this process; `Config::from_args` would read
//! // timely's -w/-n/-p/-h flags instead.
//! let args = Args { rows: 20_000, batch: 4_096, ..Args::default() };
//! let guards = timely::execute(timely::Config::process(2), move |worker| run_worker(worker, &args))
//!     .expect("timely starts");
//! let runs: Vec<_> = guards.join().into_iter().map(|r| r.unwrap().unwrap()).collect();
//! let run = runs[0].expect("worker 0 reports the whole run");
//! assert_eq!(run.totals.rows, 20_000);
//! assert_eq!(run.workers, 2);
//! assert!(runs[1].is_none());
//! ```
//!
//! # Keyed state and order
//!
//! A sequential stage is only correct across workers if its state splits by
//! a key that [`RowCodec::key`] routes on: the gateway-8 quota keeps one
//! counter per route and the key is the route, so each worker's quota state
//! only ever sees its own routes, in global row order. State that needs
//! every row (a global counter) cannot be split this way: key every row
//! to one worker, or keep that stage out of the distributed part. Stateless
//! stages (auth, validate, route, enrich, timing) give the same result
//! wherever they run; here they run in the same fused pipeline after the
//! exchange. Reductions are partials per worker; emit them from
//! [`RowCodec::emit`] or [`RowCodec::finish`] and combine them with
//! [`fold_at_leader`]. A stage whose result depends on the whole run
//! (gateway-8's timing needs `NOW_NS`, the last row's timestamp) needs that
//! value up front: every worker is given `--rows`.
//!
//! Rows of an epoch wait until the frontier has passed the epoch, i.e. until
//! every worker has finished sending it: an epoch is the latency unit. Small
//! epochs cost progress traffic, large ones memory (a worker holds its
//! share of every unfinished epoch).
//!
//! # Honest limits
//!
//! - **The process set is fixed at start.** Timely connects the `-n`
//!   processes of the host file once, before any data flows; workers can
//!   be neither added nor removed while a computation runs. To change the
//!   size, stop the job and start it again with new `-w`/`-n`.
//! - **A peer that dies ends the computation.** There is no failover and
//!   no checkpoint. When a process exits or its connection drops, the
//!   others' communication threads panic ("timely communication error:
//!   reading data: socket closed"), their workers stop and the processes
//!   exit with an error (`examples/cluster.rs` says so and exits 1) or,
//!   when timely panics again while unwinding, abort; `tests/cluster.rs`
//!   checks that the survivor ends. A peer that hangs instead of dying makes
//!   the others wait for it forever, and a peer that never starts keeps
//!   them at "awaiting connections": only a deadline outside the job
//!   notices. A panic in an operator (a failing codec, see
//!   [`run_pipeline`]) ends the computation too. Operator state (quota
//!   counters, stashed epochs, partial metrics) lives in worker memory
//!   only and is lost with the job.
//! - **What a user does about it:** treat a run as a job that either
//!   completes or is restarted as a whole, by a supervisor (systemd,
//!   Kubernetes, a batch scheduler) that restarts every process of the job,
//!   never a single one, and with a deadline that catches hangs. Feed the
//!   job replayable input, such as the Arrow IPC files `mware::arrow`
//!   writes and maps (feature `arrow`), one record batch per epoch. The
//!   simplest restart replays the whole input. To resume instead, each
//!   worker saves, after it finishes an epoch, its sequential state (the
//!   quota counters, through `StateHandle::lock`) and its unsent
//!   reduction partials, tagged with the epoch; the restart point is the
//!   last epoch that every worker saved, i.e. the last fully processed
//!   record batch. Restart all processes with the same worker count (state
//!   is split by `key % workers`), restore each worker's state and replay
//!   from the next record batch. Outputs of replayed epochs must be
//!   idempotent (keyed by row or epoch) or deduplicated downstream.
//! - **Costs.** Rows cross workers as records: within a process through
//!   shared-memory queues, between processes serialised (bincode) over
//!   TCP. That is far more expensive than mware's fused loop over a
//!   column (see BENCHMARKS.md, "timely"): scale-out pays off when the
//!   stages are expensive or the input does not fit one machine, not for
//!   gateway-8's few nanoseconds per row. Timely 0.32 needs Rust 1.86,
//!   one release newer than mware without the feature.
//! - **Security.** Timely's TCP connections are neither authenticated nor
//!   encrypted: run a cluster on a trusted network only.

pub mod gateway;
mod operator;

pub use operator::{RowCodec, fold_at_leader, run_pipeline};
