//! # mware
//!
//! Data-oriented middleware chains: request contexts live as columns in a
//! [`Batch`], middleware stages are systems over those columns, and a
//! [`Pipeline`] runs them chunk by chunk in fused loops, with the exact
//! semantics of a per-request onion (before-stages outermost first, the
//! handler, after-stages innermost first; a rejected row short-circuits).
//!
//! ```
//! use mware::prelude::*;
//!
//! // 1. A schema: hot Pod fields become aligned columns.
//! let mut s = SchemaBuilder::new();
//! let user = s.hot::<u64>("user_id");
//! let len = s.hot::<u32>("payload_len");
//! let cost = s.hot::<u32>("cost");
//! let schema = s.build()?;
//!
//! // 2. Stages declare their access with types and get typed rows.
//! let auth = stage::parallel("auth", Read(user), |u: &u64, ctl: &mut RowCtl| {
//!     if *u == 0 { ctl.reject(401) }
//! }).rejects();
//! let limit = stage::parallel("limit", Read(len), |l: &u32, ctl: &mut RowCtl| {
//!     if *l > 1024 { ctl.reject(413) }
//! }).rejects();
//! let price = stage::parallel("price", (Read(len), Write(cost)), |(l, c): (&u32, &mut u32), ctl: &mut RowCtl| {
//!     *c = *l / 10;
//!     ctl.respond(200);
//! });
//!
//! // 3. A static chain fuses the three into one loop body.
//! use mware::chain::before;
//! let pipeline = Pipeline::builder(&schema)
//!     .chain(mware::chain![before(auth), before(limit), before(price)])
//!     .build()?;
//!
//! // 4. Fill a batch by rows and run it.
//! let mut batch = Batch::new(&schema);
//! for (u, l) in [(7, 100), (0, 100), (8, 5000)] {
//!     batch.push_row().set(user, u)?.set(len, l)?;
//! }
//! pipeline.run(&mut batch)?;
//! assert_eq!(batch.live_rows(), 1);
//! assert_eq!(batch.column(cost)?, &[10, 0, 0]);
//! assert_eq!((0..3).map(|r| batch.status(r).unwrap()).collect::<Vec<_>>(), vec![200, 401, 413]);
//! # Ok::<(), mware::Error>(())
//! ```
//!
//! See `ARCHITECTURE.md` for the data flow and the module map.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod access;
mod adapt;
mod affinity;
#[cfg(feature = "async")]
pub mod aio;
#[cfg(feature = "arrow")]
pub mod arrow;
mod batch;
mod beside;
pub mod chain;
mod column;
mod control;
mod error;
mod exec;
mod fetch;
pub mod gateway8;
pub mod monitor;
mod pipeline;
mod plan;
mod report;
mod schema;
mod slot;
pub mod stage;
pub mod stream;
#[cfg(feature = "timely")]
pub mod timely;
mod turns;
mod unit;

pub use access::{
    Access, ColdCell, ColdRead, ColdWrite, FRAME_FIELDS, FieldUse, Pinned, Read, ReadAt, ReadCold, RowOf,
    SlicesOf, Write, WriteAt, WriteCold,
};
pub use batch::{Batch, RowWriter};
pub use column::{COLUMN_ALIGN, ColdColumn, SharedColumn};
pub use control::{MAX_DEPTH, Outcome, RowCtl, RowState};
pub use error::{Error, Result, StageError};
pub use fetch::block_on;
pub use pipeline::{DEFAULT_MIN_PARALLEL_WORK, Pipeline, PipelineBuilder, Stage};
pub use plan::{Group, Plan, Segment, Step};
pub use report::{GroupReport, RunReport, StageReport};
pub use schema::{Field, FieldInfo, Schema, SchemaBuilder, Storage};
pub use stage::{Kind, RowStage, Rows, Selection, StageMeta, StateHandle};

/// The names most programs need.
pub mod prelude {
    pub use crate::stage;
    pub use crate::stage::{AsyncRows, AsyncStage};
    pub use crate::stream::StreamRunner;
    pub use crate::{
        Batch, Field, Kind, Outcome, Pipeline, Read, ReadAt, ReadCold, RowCtl, Rows, Schema, SchemaBuilder,
        Selection, Write, WriteAt, WriteCold,
    };
}

/// The README's tour, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
