//! Degradation alerts: a [`Monitor`] watches the per-stage figures of
//! profiled runs and calls back when a stage gets slower than it was.
//!
//! Each stage has a ring buffer of its last `window` samples (one sample per
//! run that gave the stage rows: its ns/row), allocated when the monitor is
//! built. Every `window` samples the stage's window is evaluated: its median
//! (or mean) ns/row is compared with the stage's baseline, which is either
//! set by the user or learnt from the stage's first full window. A window
//! above `baseline × factor` fires one [`Alert`]: at most one alert per stage
//! per window, whatever the window's samples. [`Monitor::observe`] allocates
//! nothing.
//!
//! Stages of one fused loop are timed together (see
//! [`StageReport::time`]); when their window degrades they raise one alert
//! between them, naming every stage of the loop in
//! [`Alert::timed_with`].
//!
//! With the `tracing` feature on, every alert is also a `WARN` event with
//! target `mware::monitor`.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::report::{RunReport, StageReport};

/// How a window of samples is summarised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Statistic {
    /// The median ns/row of the window's runs (the default): one run slowed
    /// by the operating system (preemption, a page fault storm) does not
    /// move it.
    #[default]
    Median,
    /// The mean ns/row of the window's runs.
    Mean,
}

/// What a [`Monitor`] reports when a stage degrades.
#[derive(Clone, Copy, Debug)]
pub struct Alert<'a> {
    /// The stage, as the run that completed the window reported it.
    pub stage: &'a StageReport,
    /// Its index in [`RunReport::stages`] and [`Monitor::stages`].
    pub index: usize,
    /// The stages timed together with it: every stage of its fused loop in
    /// that run (just the stage itself for an own pass).
    pub timed_with: &'a [StageReport],
    /// The window's ns/row (median or mean, see [`Statistic`]).
    pub ns_per_row: f64,
    /// The stage's baseline ns/row.
    pub baseline_ns_per_row: f64,
    /// The configured factor the window exceeded.
    pub factor: f64,
    /// Which of the stage's windows this is (1 = its first full window).
    pub window: u64,
}

impl Alert<'_> {
    /// How many times its baseline the window took.
    pub fn ratio(&self) -> f64 {
        self.ns_per_row / self.baseline_ns_per_row
    }
}

impl fmt::Display for Alert<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stage `{}` degraded: {:.2} ns/row in window {}, {:.2}× its baseline {:.2} ns/row (alert above {}×)",
            self.stage.name,
            self.ns_per_row,
            self.window,
            self.ratio(),
            self.baseline_ns_per_row,
            self.factor
        )?;
        if self.timed_with.len() > 1 {
            f.write_str("; timed as one fused loop with")?;
            for s in self.timed_with.iter().filter(|s| s.name != self.stage.name) {
                write!(f, " `{}`", s.name)?;
            }
        }
        Ok(())
    }
}

type Callback = Box<dyn FnMut(&Alert<'_>) + Send>;

/// Configures a [`Monitor`]; start with [`Monitor::builder`].
pub struct MonitorBuilder {
    names: Vec<Arc<str>>,
    window: usize,
    factor: f64,
    statistic: Statistic,
    min_rows: u64,
    min_ns_per_row: f64,
    baselines: Vec<(String, f64)>,
    callback: Option<Callback>,
}

impl fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("stages", &self.names)
            .field("window", &self.window)
            .field("factor", &self.factor)
            .field("statistic", &self.statistic)
            .finish_non_exhaustive()
    }
}

impl MonitorBuilder {
    /// Samples (profiled runs) per window (default 16, at least 1).
    pub fn window(mut self, runs: usize) -> Self {
        self.window = runs;
        self
    }

    /// Alert when a window's ns/row exceeds `factor` times the baseline
    /// (default 2.0; must be finite and above 0).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// How a window is summarised (default [`Statistic::Median`]).
    pub fn statistic(mut self, statistic: Statistic) -> Self {
        self.statistic = statistic;
        self
    }

    /// A run gives a stage a sample only if the stage saw at least `rows`
    /// rows in it (default 1): tiny batches give noisy ns/row.
    pub fn min_rows(mut self, rows: u64) -> Self {
        self.min_rows = rows.max(1);
        self
    }

    /// Never alert for a window below `ns` ns/row, whatever its baseline
    /// (default 0): keeps stages that cost next to nothing quiet.
    pub fn min_ns_per_row(mut self, ns: f64) -> Self {
        self.min_ns_per_row = ns;
        self
    }

    /// Sets `stage`'s baseline (ns/row) instead of learning it from its
    /// first full window.
    pub fn baseline(mut self, stage: &str, ns_per_row: f64) -> Self {
        self.baselines.push((stage.to_string(), ns_per_row));
        self
    }

    /// The callback every alert is passed to (default: none; the alerts are
    /// still counted, and traced with the `tracing` feature).
    pub fn on_alert(mut self, callback: impl FnMut(&Alert<'_>) + Send + 'static) -> Self {
        self.callback = Some(Box::new(callback));
        self
    }

    /// Checks the configuration and allocates the ring buffers.
    pub fn build(self) -> Result<Monitor> {
        if self.window == 0 {
            return Err(Error::Config("a monitor window needs at least one run".into()));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(Error::Config(format!("monitor factor {} is not a positive number", self.factor)));
        }
        let n = self.names.len();
        let mut baseline = vec![None; n];
        for (name, ns) in &self.baselines {
            let i = self.names.iter().position(|s| s.as_ref() == name.as_str()).ok_or_else(|| {
                Error::Config(format!("monitor baseline for `{name}`: the pipeline has no such stage"))
            })?;
            if !(ns.is_finite() && *ns >= 0.0) {
                return Err(Error::Config(format!("monitor baseline {ns} for `{name}` is not a number ≥ 0")));
            }
            baseline[i] = Some(*ns);
        }
        Ok(Monitor {
            ring: vec![0.0; n * self.window],
            scratch: vec![0.0; self.window],
            lanes: vec![Lane::default(); n],
            fixed: baseline.iter().map(Option::is_some).collect(),
            baseline,
            names: self.names,
            window: self.window,
            factor: self.factor,
            statistic: self.statistic,
            min_rows: self.min_rows,
            min_ns_per_row: self.min_ns_per_row,
            callback: self.callback,
            alerts: 0,
            observed: 0,
            ignored: 0,
        })
    }
}

/// One stage's ring buffer position and counts.
#[derive(Clone, Copy, Debug, Default)]
struct Lane {
    /// Next slot to write.
    head: usize,
    /// Samples held (at most the window).
    held: usize,
    /// Samples since the last evaluation.
    fresh: usize,
    /// Windows evaluated.
    windows: u64,
}

/// Watches profiled runs of one pipeline and raises an [`Alert`] when a
/// stage's ns/row exceeds its baseline by a configured factor (see the
/// [module docs](crate::monitor)).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
/// use mware::prelude::*;
/// use mware::monitor::Monitor;
///
/// let mut s = SchemaBuilder::new();
/// let x = s.hot::<u64>("x");
/// let schema = s.build()?;
/// // A stage that becomes slow when the flag is set.
/// let slow = Arc::new(AtomicBool::new(false));
/// let flag = slow.clone();
/// let lookup = stage::parallel("lookup", Read(x), move |_: &u64, ctl: &mut RowCtl| {
///     if ctl.row() == 0 && flag.load(Ordering::Relaxed) {
///         std::thread::sleep(std::time::Duration::from_millis(2));
///     }
/// });
/// let pipeline = Pipeline::builder(&schema).before(lookup).threads(1).profile(true).build()?;
///
/// let fired = Arc::new(AtomicUsize::new(0));
/// let count = fired.clone();
/// let mut monitor = Monitor::builder(&pipeline)
///     .window(4)
///     .factor(10.0)
///     .on_alert(move |alert| {
///         assert_eq!(alert.stage.name.as_ref(), "lookup");
///         count.fetch_add(1, Ordering::Relaxed);
///     })
///     .build()?;
///
/// let mut batch = Batch::new(&schema);
/// batch.resize(256);
/// for run in 0..12 {
///     slow.store(run >= 4, Ordering::Relaxed); // the first window is the baseline
///     monitor.observe(&pipeline.run(&mut batch)?);
/// }
/// assert_eq!(fired.load(Ordering::Relaxed), 2); // windows 2 and 3
/// assert_eq!(monitor.alerts(), 2);
/// # Ok::<(), mware::Error>(())
/// ```
pub struct Monitor {
    names: Vec<Arc<str>>,
    /// `window` samples per stage, stage after stage.
    ring: Vec<f64>,
    /// Room to compute a median without allocating.
    scratch: Vec<f64>,
    lanes: Vec<Lane>,
    baseline: Vec<Option<f64>>,
    /// Whether a stage's baseline was set by the user.
    fixed: Vec<bool>,
    window: usize,
    factor: f64,
    statistic: Statistic,
    min_rows: u64,
    min_ns_per_row: f64,
    callback: Option<Callback>,
    alerts: u64,
    observed: u64,
    ignored: u64,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("stages", &self.names)
            .field("window", &self.window)
            .field("factor", &self.factor)
            .field("baseline", &self.baseline)
            .field("alerts", &self.alerts)
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Starts configuring a monitor for `pipeline`'s stages. Turn the
    /// pipeline's profiling on: reports without per-stage figures are
    /// skipped.
    pub fn builder(pipeline: &Pipeline) -> MonitorBuilder {
        Monitor::builder_for(pipeline.plan().steps.iter().map(|s| s.meta.name.clone()))
    }

    /// Starts configuring a monitor for stages named `names`, in execution
    /// order (as [`RunReport::stages`] lists them).
    pub fn builder_for<S: Into<Arc<str>>>(names: impl IntoIterator<Item = S>) -> MonitorBuilder {
        MonitorBuilder {
            names: names.into_iter().map(Into::into).collect(),
            window: 16,
            factor: 2.0,
            statistic: Statistic::Median,
            min_rows: 1,
            min_ns_per_row: 0.0,
            baselines: Vec::new(),
            callback: None,
        }
    }

    /// Feeds one run's report: adds a sample per stage that saw rows,
    /// evaluates each stage whose window is complete, and calls the callback
    /// for every stage (or fused loop) whose window exceeds its baseline by
    /// the factor. Returns the number of alerts raised. Allocates nothing.
    ///
    /// A report without per-stage figures (profiling off), or whose stages
    /// are not this monitor's, is skipped and counted in
    /// [`ignored`](Monitor::ignored).
    pub fn observe(&mut self, report: &RunReport) -> usize {
        let stages = &report.stages;
        if stages.len() != self.names.len()
            || stages.is_empty()
            || stages.iter().zip(&self.names).any(|(s, n)| s.name != *n)
        {
            self.ignored += 1;
            return 0;
        }
        self.observed += 1;
        let w = self.window;
        let mut raised = 0;
        // The fused group of the last alert in this report: its other
        // stages share its time and its alert.
        let mut alerted_group = None;
        for (i, st) in stages.iter().enumerate() {
            if st.rows < self.min_rows {
                continue;
            }
            let lane = &mut self.lanes[i];
            let ring = &mut self.ring[i * w..(i + 1) * w];
            ring[lane.head] = st.ns_per_row();
            lane.head = (lane.head + 1) % w;
            lane.held = (lane.held + 1).min(w);
            lane.fresh += 1;
            if lane.fresh < w {
                continue;
            }
            lane.fresh = 0;
            lane.windows += 1;
            let window = lane.windows;
            let value = summarise(self.statistic, ring, &mut self.scratch);
            let Some(base) = self.baseline[i] else {
                self.baseline[i] = Some(value);
                continue;
            };
            let threshold = (base * self.factor).max(self.min_ns_per_row);
            if !(value > threshold && threshold > 0.0) {
                continue;
            }
            if st.fused && alerted_group == Some(st.group) {
                continue;
            }
            alerted_group = Some(st.group);
            let alert = Alert {
                stage: st,
                index: i,
                timed_with: timed_with(stages, i),
                ns_per_row: value,
                baseline_ns_per_row: base,
                factor: self.factor,
                window,
            };
            #[cfg(feature = "tracing")]
            tracing::warn!(
                target: "mware::monitor",
                stage = %alert.stage.name,
                ns_per_row = alert.ns_per_row,
                baseline_ns_per_row = alert.baseline_ns_per_row,
                ratio = alert.ratio(),
                window = alert.window,
                fused_stages = alert.timed_with.len(),
                "stage degraded"
            );
            if let Some(cb) = self.callback.as_mut() {
                cb(&alert);
            }
            self.alerts += 1;
            raised += 1;
        }
        raised
    }

    /// The stages watched, in execution order.
    pub fn stages(&self) -> &[Arc<str>] {
        &self.names
    }

    /// A stage's baseline ns/row: set by the user, or learnt from its first
    /// full window (`None` until then).
    pub fn baseline(&self, stage: usize) -> Option<f64> {
        self.baseline.get(stage).copied().flatten()
    }

    /// Sets a stage's baseline (ns/row).
    pub fn set_baseline(&mut self, stage: &str, ns_per_row: f64) -> Result<()> {
        let i = self.index_of(stage)?;
        self.baseline[i] = Some(ns_per_row);
        self.fixed[i] = true;
        Ok(())
    }

    /// Forgets every baseline that was learnt (not those set by the user):
    /// each stage's next full window becomes its baseline. Call it after a
    /// deliberate change (a new release, a bigger machine).
    pub fn relearn(&mut self) {
        for (b, fixed) in self.baseline.iter_mut().zip(&self.fixed) {
            if !fixed {
                *b = None;
            }
        }
        for lane in &mut self.lanes {
            lane.fresh = 0;
        }
    }

    /// A stage's ns/row over its last `window` samples (or fewer, before it
    /// has that many): what the next evaluation would see if it came now.
    pub fn current(&mut self, stage: usize) -> Option<f64> {
        let lane = *self.lanes.get(stage)?;
        if lane.held == 0 {
            return None;
        }
        let w = self.window;
        let ring = &self.ring[stage * w..(stage + 1) * w];
        // The samples held are the last `held` written, ending before `head`.
        let start = (lane.head + w - lane.held) % w;
        let scratch = &mut self.scratch[..lane.held];
        for (k, v) in scratch.iter_mut().enumerate() {
            *v = ring[(start + k) % w];
        }
        Some(summarise_in_place(self.statistic, scratch))
    }

    /// Alerts raised so far.
    pub fn alerts(&self) -> u64 {
        self.alerts
    }

    /// Reports observed so far (not counting ignored ones).
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// Reports skipped: without per-stage figures or of another pipeline.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn index_of(&self, stage: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|s| s.as_ref() == stage)
            .ok_or_else(|| Error::Config(format!("the monitor watches no stage `{stage}`")))
    }
}

/// The stages that share stage `i`'s timed loop in one report.
fn timed_with(stages: &[StageReport], i: usize) -> &[StageReport] {
    if !stages[i].fused {
        return &stages[i..=i];
    }
    let g = stages[i].group;
    let start = stages[..i].iter().rposition(|s| s.group != g).map_or(0, |p| p + 1);
    let end = stages[i..].iter().position(|s| s.group != g).map_or(stages.len(), |p| i + p);
    &stages[start..end]
}

/// Summarises a full window (copied into `scratch`, so the ring keeps its
/// order).
fn summarise(statistic: Statistic, ring: &[f64], scratch: &mut [f64]) -> f64 {
    let scratch = &mut scratch[..ring.len()];
    scratch.copy_from_slice(ring);
    summarise_in_place(statistic, scratch)
}

fn summarise_in_place(statistic: Statistic, v: &mut [f64]) -> f64 {
    match statistic {
        Statistic::Mean => v.iter().sum::<f64>() / v.len() as f64,
        Statistic::Median => {
            let (len, mid) = (v.len(), v.len() / 2);
            let (low, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
            let m = *m;
            if len % 2 == 1 {
                m
            } else {
                // The largest of the lower half is the other middle value.
                let below = low.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (below + m) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mean() {
        let mut v = [5.0, 1.0, 3.0];
        assert_eq!(summarise_in_place(Statistic::Median, &mut v), 3.0);
        let mut v = [4.0, 1.0, 3.0, 100.0];
        assert_eq!(summarise_in_place(Statistic::Median, &mut v), 3.5);
        let mut v = [1.0, 2.0, 3.0, 6.0];
        assert_eq!(summarise_in_place(Statistic::Mean, &mut v), 3.0);
    }
}
