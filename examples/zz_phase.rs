// Scratch: per round, each CPU's speed (ALU burst), `run` unpinned and
// pinned to each CPU, and the default stream.
use mware::Batch;
use mware::gateway8::{Composition, Fields, GatewayPipeline};
use mware::stream::StreamRunner;
use std::sync::Arc;
use std::time::Instant;

unsafe extern "C" {
    fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> i32;
    fn sched_getcpu() -> i32;
}
fn pin(mask: u64) {
    let set = [mask, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    unsafe { sched_setaffinity(0, 128, set.as_ptr()) };
}
fn alu() -> f64 {
    let t = Instant::now();
    let mut s = [1u64, 2, 3, 4, 5, 6, 7, 8];
    for _ in 0..std::hint::black_box(1_000_000u64) {
        for x in s.iter_mut() {
            *x = x.wrapping_mul(0x9E3779B97F4A7C15) ^ (*x >> 29);
        }
    }
    std::hint::black_box(s);
    t.elapsed().as_secs_f64() * 1e3
}
fn speeds() -> (f64, f64) {
    let b = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            pin(2);
            b.wait();
            alu()
        });
        pin(1);
        b.wait();
        let a = alu();
        pin(3);
        (a, h.join().unwrap())
    })
}

fn main() {
    let rows_total = 1usize << 20;
    let batch: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(4096);
    let (schema, f) = Fields::schema();
    let mut input: Vec<Batch> = (0..rows_total)
        .step_by(batch)
        .map(|first| {
            let mut b = Batch::new(&schema);
            f.fill(&mut b, 42, first as u64, batch).unwrap();
            b
        })
        .collect();
    let gw = GatewayPipeline::build(&f, &schema, rows_total as u64, Composition::Static, |b| b).unwrap();
    let (quota, metrics) = (gw.quota, gw.metrics);
    let pipeline = Arc::new(gw.pipeline);
    let reset = |input: &mut Vec<Batch>| {
        quota.replace([0; mware::gateway8::ROUTES]);
        metrics.replace(Default::default());
        for b in input.iter_mut() {
            b.reset_control();
            b.column_mut(f.cost).unwrap().fill(0);
            b.column_mut(f.score).unwrap().fill(0.0);
            b.column_mut(f.latency_ns).unwrap().fill(0);
        }
    };
    let run = |input: &mut Vec<Batch>, mask: u64| {
        reset(input);
        pin(mask);
        let t = Instant::now();
        for b in input.iter_mut() {
            pipeline.run(b).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let cpu = unsafe { sched_getcpu() };
        pin(3);
        (ms, cpu)
    };
    let stream = |input: &mut Vec<Batch>| {
        reset(input);
        let runner = StreamRunner::builder(pipeline.clone()).build().unwrap();
        let mut consumer = runner.consumer().unwrap();
        let producer = runner.producer();
        let n = input.len();
        let mut todo = std::mem::take(input);
        let start = std::sync::Barrier::new(2);
        let ms = std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                for b in todo.drain(..) {
                    producer.submit(b).unwrap();
                }
            });
            start.wait();
            let t = Instant::now();
            for _ in 0..n {
                input.push(consumer.recv().unwrap().into_batch());
            }
            t.elapsed().as_secs_f64() * 1e3
        });
        let st = runner.close();
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
        (ms, per(st.busy) / 2.0, per(st.turn_wait) / 2.0, per(st.idle) / 2.0)
    };
    let (front, rest) = GatewayPipeline::halves(&f, &schema, rows_total as u64, |b| b.threads(1)).unwrap();
    let halves = |input: &mut Vec<Batch>, mask: u64| {
        reset(input);
        rest.quota.replace([0; mware::gateway8::ROUTES]);
        rest.metrics.replace(Default::default());
        pin(mask);
        let t = Instant::now();
        input.iter_mut().for_each(|b| drop(front.run(b).unwrap()));
        let a = t.elapsed().as_secs_f64() * 1e6 / input.len() as f64;
        let t = Instant::now();
        input.iter_mut().for_each(|b| drop(rest.pipeline.run(b).unwrap()));
        let b = t.elapsed().as_secs_f64() * 1e6 / input.len() as f64;
        pin(3);
        (a, b)
    };
    println!(
        "round  alu0 alu1 | run(cpu) run0 run1 stream | alu0 alu1 | stream/run stream/mean | us/batch: worker busy (turn wait) idle; front/rest cpu0, cpu1"
    );
    for round in 0..30 {
        let (a0, a1) = speeds();
        let (r, rc) = run(&mut input, 3);
        let (r0, _) = run(&mut input, 1);
        let (r1, _) = run(&mut input, 2);
        let (st, busy, tw, idle) = stream(&mut input);
        let (b0, b1) = speeds();
        let (h0, h1) = (halves(&mut input, 1), halves(&mut input, 2));
        println!(
            "{round:>3}  {a0:.2} {a1:.2} | {r:.2}({rc}) {r0:.2} {r1:.2} {st:.2} | {b0:.2} {b1:.2} | {:.2} {:.2} | {busy:.1} ({tw:.1}) {idle:.1}; {:.1}/{:.1}, {:.1}/{:.1}",
            r / st,
            2.0 / (1.0 / r0 + 1.0 / r1) / st,
            h0.0,
            h0.1,
            h1.0,
            h1.1
        );
    }
}
