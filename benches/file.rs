//! Replay from a mapped Arrow file vs from memory.
fn main() {}
