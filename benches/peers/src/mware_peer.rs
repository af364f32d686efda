//! gateway-8 through mware (`mware::gateway8::GatewayPipeline`) and the
//! hand-written fused loop (`mware::gateway8::hand_fused`), the limit.

use std::time::{Duration, Instant};

use mware::Batch;
use mware::Schema;
use mware::gateway8::{Columns, Composition, Fields, Gateway, GatewayPipeline, Metrics, hand_fused};

use crate::Peer;

/// mware with a given composition and thread count.
pub struct MwarePeer {
    key: &'static str,
    composition: Composition,
    /// As `PipelineBuilder::threads`: 1 = the calling thread, 0 = all cores.
    threads: usize,
    all_threads: usize,
    schema: Schema,
    fields: Fields,
    gw: Option<(u64, GatewayPipeline)>,
    batch: Batch,
}

impl MwarePeer {
    pub fn boxed(
        key: &'static str,
        composition: Composition,
        threads: usize,
        all_threads: usize,
    ) -> Box<dyn Peer> {
        let (schema, fields) = Fields::schema();
        let batch = Batch::new(&schema);
        Box::new(MwarePeer { key, composition, threads, all_threads, schema, fields, gw: None, batch })
    }

    fn pipeline(&self) -> &GatewayPipeline {
        &self.gw.as_ref().expect("reset first").1
    }

    /// Copies rows `first .. first + n` of `cols` into the batch.
    fn fill(&mut self, cols: &Columns, first: usize, n: usize) -> mware::Result<()> {
        let (f, b) = (&self.fields, &mut self.batch);
        b.clear();
        b.resize(n);
        b.column_mut(f.user_id)?.copy_from_slice(&cols.user_id[first..first + n]);
        b.column_mut(f.token)?.copy_from_slice(&cols.token[first..first + n]);
        b.column_mut(f.route)?.copy_from_slice(&cols.route[first..first + n]);
        b.column_mut(f.payload_len)?.copy_from_slice(&cols.payload_len[first..first + n]);
        b.column_mut(f.ts_ns)?.copy_from_slice(&cols.ts_ns[first..first + n]);
        Ok(())
    }

    /// Row `i` of `cols` alone through the pipeline, as a latency-minded
    /// user would: one recycled batch of one row, its control state reset,
    /// the inputs written and the outputs zeroed through the field handles.
    #[inline]
    fn one(&mut self, cols: &mut Columns, i: usize) -> mware::Result<()> {
        let (f, b) = (&self.fields, &mut self.batch);
        if b.len() != 1 {
            b.clear();
            b.resize(1);
        }
        b.reset_control();
        b.column_mut(f.user_id)?[0] = cols.user_id[i];
        b.column_mut(f.token)?[0] = cols.token[i];
        b.column_mut(f.route)?[0] = cols.route[i];
        b.column_mut(f.payload_len)?[0] = cols.payload_len[i];
        b.column_mut(f.ts_ns)?[0] = cols.ts_ns[i];
        b.column_mut(f.cost)?[0] = 0;
        b.column_mut(f.score)?[0] = 0.0;
        b.column_mut(f.latency_ns)?[0] = 0;
        let gw = &self.gw.as_ref().expect("reset first").1;
        gw.pipeline.run(b)?;
        cols.status[i] = b.states()[0].status();
        cols.cost[i] = b.column(f.cost)?[0];
        cols.score[i] = b.column(f.score)?[0];
        cols.latency_ns[i] = b.column(f.latency_ns)?[0];
        Ok(())
    }

    /// Copies the batch's outputs to rows `first ..` of `cols`.
    fn read(&self, cols: &mut Columns, first: usize) -> mware::Result<()> {
        let (f, b) = (&self.fields, &self.batch);
        let n = b.len();
        for (dst, s) in cols.status[first..first + n].iter_mut().zip(b.states()) {
            *dst = s.status();
        }
        cols.cost[first..first + n].copy_from_slice(b.column(f.cost)?);
        cols.score[first..first + n].copy_from_slice(b.column(f.score)?);
        cols.latency_ns[first..first + n].copy_from_slice(b.column(f.latency_ns)?);
        Ok(())
    }
}

impl Peer for MwarePeer {
    fn key(&self) -> &'static str {
        self.key
    }
    fn label(&self) -> String {
        let threads = if self.threads == 1 {
            "1 thread".to_string()
        } else {
            let n = if self.threads == 0 { self.all_threads } else { self.threads };
            format!("{n} threads")
        };
        let comp = match self.composition {
            Composition::Static => "static",
            Composition::Pinned => "pinned",
            Composition::Boxed => "boxed",
        };
        format!("mware, {threads}, {comp}")
    }
    fn reset(&mut self, total_rows: u64) {
        match &self.gw {
            Some((rows, gw)) if *rows == total_rows => gw.reset(),
            _ => {
                let threads = self.threads;
                let gw =
                    GatewayPipeline::build(&self.fields, &self.schema, total_rows, self.composition, |b| {
                        b.threads(threads)
                    })
                    .expect("gateway-8 builds");
                self.gw = Some((total_rows, gw));
            }
        }
    }
    fn batch(&mut self, cols: &mut Columns) -> Duration {
        self.fill(cols, 0, cols.len()).expect("fill");
        let t = Instant::now();
        let gw = &self.gw.as_ref().expect("reset first").1;
        gw.pipeline.run(&mut self.batch).expect("run");
        let busy = t.elapsed();
        self.read(cols, 0).expect("read");
        busy
    }
    fn singles(&mut self, cols: &mut Columns) -> Duration {
        let t = Instant::now();
        for i in 0..cols.len() {
            self.one(cols, i).expect("single request");
        }
        t.elapsed()
    }
    fn metrics(&self) -> Metrics {
        *self.pipeline().metrics.lock()
    }
}

/// `hand_fused`: every stage for one row in one loop body, on plain vectors.
pub struct HandFused {
    state: Gateway,
    one: Columns,
}

impl HandFused {
    pub fn boxed() -> Box<dyn Peer> {
        Box::new(HandFused { state: Gateway::new(1), one: Columns::generate(0, 0, 1) })
    }
}

impl Peer for HandFused {
    fn key(&self) -> &'static str {
        "hand"
    }
    fn label(&self) -> String {
        "hand-written fused loop (limit)".into()
    }
    fn reset(&mut self, total_rows: u64) {
        self.state = Gateway::new(total_rows);
    }
    fn batch(&mut self, cols: &mut Columns) -> Duration {
        let t = Instant::now();
        hand_fused(cols, &mut self.state);
        t.elapsed()
    }
    fn singles(&mut self, cols: &mut Columns) -> Duration {
        let one = &mut self.one;
        let t = Instant::now();
        for i in 0..cols.len() {
            one.user_id[0] = cols.user_id[i];
            one.token[0] = cols.token[i];
            one.route[0] = cols.route[i];
            one.payload_len[0] = cols.payload_len[i];
            one.ts_ns[0] = cols.ts_ns[i];
            one.status[0] = 0;
            one.cost[0] = 0;
            one.score[0] = 0.0;
            one.latency_ns[0] = 0;
            hand_fused(one, &mut self.state);
            cols.status[i] = one.status[0];
            cols.cost[i] = one.cost[0];
            cols.score[i] = one.score[0];
            cols.latency_ns[i] = one.latency_ns[0];
        }
        t.elapsed()
    }
    fn metrics(&self) -> Metrics {
        self.state.metrics
    }
}
