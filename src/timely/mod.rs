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
//! - **A peer that dies ends the computation.** There is no failover: when
//!   a process exits or its connection drops, the others fail (their
//!   communication threads panic and the workers stop) or, if the peer
//!   hangs, wait for it. A panic in an operator (a failing codec, see
//!   [`run_pipeline`]) does the same. Nothing is checkpointed either:
//!   operator state (quota counters, stashed epochs, partial metrics)
//!   lives in worker memory only.
//! - **What a user does about it:** treat a run as a job that either
//!   completes or is restarted. Feed it from replayable input, such as the
//!   Arrow IPC files `mware::arrow` writes and maps (feature `arrow`), one
//!   record batch per epoch; record, outside the job, the last epoch that every worker
//!   completed (the probe's frontier) together with the sequential state
//!   at that point (`StateHandle::lock` on the quota, the folded totals);
//!   after a failure, start all processes again, restore that state and
//!   replay from the first record batch after the last fully processed
//!   one. Outputs of the replayed epochs must be idempotent (keyed by row
//!   or by epoch) or deduplicated downstream. Run a supervisor (systemd,
//!   Kubernetes, a job scheduler) that restarts the whole process set, not
//!   single processes.
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
