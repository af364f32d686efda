//! Replays a gateway-8 request log (an Arrow IPC file) through the pipeline.
fn main() {}
