//! Build-time and use-time validation: every error names what went wrong.

use mware::prelude::*;
use mware::{Error, chain};

/// A schema with hot `a`, `b` (u32), `c` (u64) and cold `note` (String).
struct S {
    schema: Schema,
    a: Field<u32>,
    b: Field<u32>,
    c: Field<u64>,
    note: Field<String>,
}

fn schema() -> S {
    let mut s = SchemaBuilder::new();
    let a = s.hot::<u32>("alpha");
    let b = s.hot::<u32>("beta");
    let c = s.hot::<u64>("gamma");
    let note = s.cold::<String>("note");
    S { schema: s.build().unwrap(), a, b, c, note }
}

fn build_err(b: mware::PipelineBuilder) -> Error {
    b.build().expect_err("the pipeline must not build")
}

fn assert_names(e: &Error, words: &[&str]) {
    let msg = e.to_string();
    for w in words {
        assert!(msg.contains(w), "message `{msg}` does not name `{w}`");
    }
}

#[test]
fn reading_and_writing_one_field_is_aliased_access() {
    let s = schema();
    let st = stage::parallel("aliaser", (Read(s.a), Write(s.a)), |_: (&u32, &mut u32), _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).before(st));
    assert_eq!(e, Error::AliasedAccess { stage: "aliaser".into(), field: "alpha".into() });
    assert_names(&e, &["aliaser", "alpha"]);

    // Writing twice, in the other order, and inside a static chain.
    let st = stage::parallel(
        "twice",
        (Write(s.b), Read(s.a), Write(s.b)),
        |_: (&mut u32, &u32, &mut u32), _: &mut RowCtl| {},
    );
    let ok = stage::parallel("fine", Read(s.a), |_: &u32, _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).chain(chain![chain::before(ok), chain::after(st)]));
    assert_eq!(e, Error::AliasedAccess { stage: "twice".into(), field: "beta".into() });
    assert_names(&e, &["twice", "beta"]);

    // Cold fields too, and chunk stages.
    let st = stage::parallel_chunks(
        "cold-alias",
        (ReadCold(s.note), WriteCold(s.note)),
        |_: (mware::ColdRead<'_, String>, mware::ColdWrite<'_, String>), _: &mut Rows<'_>| {},
    );
    let e = build_err(Pipeline::builder(&s.schema).after(st));
    assert_eq!(e, Error::AliasedAccess { stage: "cold-alias".into(), field: "note".into() });
    assert_names(&e, &["cold-alias", "note"]);
}

#[test]
fn reading_one_field_twice_is_allowed() {
    let s = schema();
    let st = stage::parallel(
        "twice",
        (Read(s.a), Read(s.a), Write(s.b)),
        |(x, y, z): (&u32, &u32, &mut u32), _: &mut RowCtl| *z = x + y,
    );
    let p = Pipeline::builder(&s.schema).before(st).build().unwrap();
    let mut batch = Batch::new(&s.schema);
    batch.push_row().set(s.a, 21).unwrap();
    p.run(&mut batch).unwrap();
    assert_eq!(batch.column(s.b).unwrap(), &[42]);
}

#[test]
fn a_field_of_another_schema_is_foreign() {
    let s = schema();
    let other = schema();
    let st =
        stage::parallel("stranger", (Read(s.a), Write(other.c)), |_: (&u32, &mut u64), _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).before(st));
    assert_eq!(e, Error::ForeignField { stage: "stranger".into(), field: other.c.index() as u32 });
    // The handle carries no name, only its position: `#2`.
    assert_names(&e, &["stranger", &format!("#{}", other.c.index())]);

    // The same in a chunk stage and in a chain.
    let st = stage::sequential_chunks(
        "stranger2",
        Read(other.b),
        0u8,
        |_: &mut u8, _: &[u32], _: &mut Rows<'_>| {},
    );
    let e = build_err(Pipeline::builder(&s.schema).before(st));
    assert_eq!(e, Error::ForeignField { stage: "stranger2".into(), field: other.b.index() as u32 });
    let st = stage::parallel("stranger3", Read(other.a), |_: &u32, _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).chain(chain![chain::before(st)]));
    assert!(matches!(e, Error::ForeignField { ref stage, .. } if stage == "stranger3"), "{e:?}");
}

#[test]
fn hot_and_cold_must_be_accessed_as_declared() {
    let s = schema();
    // (A cold field read as hot: see `cold_pod_field_read_as_hot`; `Read`
    // needs a Pod type, so the field must be a cold Pod field.)

    // A hot field read as cold.
    let st = stage::parallel("cold-reader", ReadCold(s.c), |_: Option<&u64>, _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).after(st));
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "cold-reader".into(), field: "gamma".into(), expected: "cold" }
    );
    assert_names(&e, &["cold-reader", "gamma"]);

    // A hot field written as cold.
    let st = stage::parallel("cold-writer", WriteCold(s.a), |_: mware::ColdCell<'_, u32>, _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).before(st));
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "cold-writer".into(), field: "alpha".into(), expected: "cold" }
    );
}

#[test]
fn cold_pod_field_read_as_hot() {
    let mut sb = SchemaBuilder::new();
    let hot = sb.hot::<u32>("hot_one");
    let cold = sb.cold::<u32>("cold_one");
    let schema = sb.build().unwrap();
    let st = stage::parallel("hot-reader", (Read(hot), Read(cold)), |_: (&u32, &u32), _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&schema).before(st));
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "hot-reader".into(), field: "cold_one".into(), expected: "hot" }
    );
    assert_names(&e, &["hot-reader", "cold_one"]);

    let st = stage::parallel_chunks("hot-writer", Write(cold), |_: &mut [u32], _: &mut Rows<'_>| {});
    let e = build_err(Pipeline::builder(&schema).after(st));
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "hot-writer".into(), field: "cold_one".into(), expected: "hot" }
    );

    // The batch refuses the same mistakes.
    let mut batch = Batch::new(&schema);
    batch.resize(2);
    let e = batch.column(cold).unwrap_err();
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "batch".into(), field: "cold_one".into(), expected: "hot" }
    );
    assert_names(&e, &["batch", "cold_one"]);
    let e = batch.cold(hot).unwrap_err();
    assert_eq!(
        e,
        Error::StorageMismatch { stage: "batch".into(), field: "hot_one".into(), expected: "cold" }
    );
    assert!(batch.column_mut(cold).is_err());
    assert!(batch.cold_mut(hot).is_err());
}

#[test]
fn an_empty_pipeline_does_not_build() {
    let s = schema();
    let e = build_err(Pipeline::builder(&s.schema));
    assert_eq!(e, Error::EmptyPipeline);
    assert!(!e.to_string().is_empty());
}

/// `chain![]` registers a unit without layers: the pipeline still has no
/// stage, so it should not build either.
#[test]
fn an_empty_chain_is_an_empty_pipeline() {
    let s = schema();
    let built = Pipeline::builder(&s.schema).chain(chain![]).build();
    assert!(matches!(built, Err(Error::EmptyPipeline)), "{built:?}");
}

#[test]
fn stage_names_are_unique() {
    let s = schema();
    let mk = |name: &str| stage::parallel(name, Read(s.a), |_: &u32, _: &mut RowCtl| {});
    // Two singles.
    let e = build_err(Pipeline::builder(&s.schema).before(mk("auth")).after(mk("auth")));
    assert_eq!(e, Error::DuplicateStage { stage: "auth".into() });
    assert_names(&e, &["auth"]);
    // Before and after of one layer.
    let e = build_err(Pipeline::builder(&s.schema).around(mk("twin"), mk("twin")));
    assert_eq!(e, Error::DuplicateStage { stage: "twin".into() });
    // Inside one chain, and across a chain and a chunk stage.
    let e =
        build_err(Pipeline::builder(&s.schema).chain(chain![chain::before(mk("x")), chain::after(mk("x"))]));
    assert_eq!(e, Error::DuplicateStage { stage: "x".into() });
    let chunk = stage::parallel_chunks("y", Read(s.a), |_: &[u32], _: &mut Rows<'_>| {});
    let e = build_err(Pipeline::builder(&s.schema).chain(chain![chain::before(mk("y"))]).after(chunk));
    assert_eq!(e, Error::DuplicateStage { stage: "y".into() });
}

#[test]
fn field_names_are_unique() {
    let mut sb = SchemaBuilder::new();
    let _ = sb.hot::<u32>("dup");
    let _ = sb.hot::<u64>("other");
    let _ = sb.hot::<u64>("dup");
    let e = sb.build().unwrap_err();
    assert_eq!(e, Error::DuplicateField { field: "dup".into() });
    assert_names(&e, &["dup"]);

    // Hot and cold share one namespace.
    let mut sb = SchemaBuilder::new();
    let _ = sb.hot::<u32>("both");
    let _ = sb.cold::<String>("both");
    assert_eq!(sb.build().unwrap_err(), Error::DuplicateField { field: "both".into() });
}

#[test]
fn over_aligned_hot_fields_are_refused() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C, align(128))]
    struct Wide([u8; 128]);
    let mut sb = SchemaBuilder::new();
    let _ = sb.hot::<Wide>("wide");
    let e = sb.build().unwrap_err();
    assert_eq!(e, Error::OverAligned { field: "wide".into(), align: 128 });
    assert_names(&e, &["wide", "128"]);
}

#[test]
fn a_batch_of_another_schema_is_refused() {
    let s = schema();
    let twin = schema(); // the same fields, another schema
    let st = stage::parallel("w", Write(s.a), |a: &mut u32, _: &mut RowCtl| *a = 7);
    let p = Pipeline::builder(&s.schema).before(st).build().unwrap();
    let mut batch = Batch::new(&twin.schema);
    batch.resize(3);
    let e = p.run(&mut batch).unwrap_err();
    assert_eq!(e, Error::SchemaMismatch);
    assert!(!e.to_string().is_empty());
    // Nothing ran.
    assert_eq!(batch.column(twin.a).unwrap(), &[0, 0, 0]);
    assert_eq!(batch.live_rows(), 3);
}

#[test]
fn a_batch_refuses_foreign_handles() {
    let s = schema();
    let other = schema();
    let mut batch = Batch::new(&s.schema);
    batch.resize(2);
    let e = batch.column(other.a).unwrap_err();
    assert_eq!(e, Error::ForeignField { stage: "batch".into(), field: other.a.index() as u32 });
    assert_names(&e, &["batch", &format!("#{}", other.a.index())]);
    assert!(matches!(batch.column_mut(other.c), Err(Error::ForeignField { .. })));
    assert!(matches!(batch.cold(other.note), Err(Error::ForeignField { .. })));
    assert!(matches!(batch.cold_mut(other.note), Err(Error::ForeignField { .. })));
    assert!(matches!(batch.push_row().set(other.b, 1), Err(Error::ForeignField { .. })));
    assert!(matches!(
        batch.row_mut(0).unwrap().set_cold(other.note, "x".into()),
        Err(Error::ForeignField { .. })
    ));
    // Own handles still work.
    assert_eq!(batch.column(s.a).unwrap().len(), 3);
}

#[test]
fn rows_out_of_bounds_are_refused() {
    let s = schema();
    let mut batch = Batch::new(&s.schema);
    batch.resize(2);
    let e = batch.row_mut(2).err().expect("out of bounds");
    assert_eq!(e, Error::RowOutOfBounds { row: 2, len: 2 });
    assert_names(&e, &["2"]);
    assert_eq!(batch.outcome(2), None);
    assert_eq!(batch.status(2), None);
    assert!(batch.error(5).is_none());
}

#[test]
fn schema_handles_are_typed() {
    let s = schema();
    assert_eq!(s.schema.handle::<u32>("alpha"), Some(s.a));
    assert_eq!(s.schema.handle::<u64>("alpha"), None, "wrong type");
    assert_eq!(s.schema.handle::<u32>("nope"), None, "unknown name");
    assert_eq!(s.schema.handle::<String>("note"), Some(s.note));
}

#[test]
fn bad_settings_are_refused() {
    let s = schema();
    let st = stage::parallel("r", Read(s.a), |_: &u32, _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).before(st).chunk_rows(0));
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert_names(&e, &["chunk_rows"]);
}

#[test]
fn too_deep_a_pipeline_is_refused() {
    let s = schema();
    let mut b = Pipeline::builder(&s.schema);
    for i in 0..=mware::MAX_DEPTH {
        b = b.before(stage::parallel(&format!("s{i}"), (), |_: (), _: &mut RowCtl| {}));
    }
    let e = build_err(b);
    assert!(matches!(e, Error::Config(_)), "{e:?}");
}

#[test]
fn reading_a_field_no_stage_writes_is_allowed() {
    let s = schema();
    // `beta` is read but never written by any stage: it keeps its input.
    let st = stage::parallel(
        "sum",
        (Read(s.a), Read(s.b), Write(s.c)),
        |(a, b, c): (&u32, &u32, &mut u64), _: &mut RowCtl| *c = *a as u64 + *b as u64,
    );
    let p = Pipeline::builder(&s.schema).before(st).build().unwrap();
    let mut batch = Batch::new(&s.schema);
    batch.push_row().set(s.a, 1).unwrap().set(s.b, 2).unwrap();
    batch.push_row(); // zeroed input
    p.run(&mut batch).unwrap();
    assert_eq!(batch.column(s.c).unwrap(), &[3, 0]);
    assert_eq!(batch.column(s.b).unwrap(), &[2, 0]);
}

/// Pinned handles go through the same checks as runtime ones, and a pin
/// that does not match the field's position is refused when made.
#[test]
fn pinned_fields_are_checked_like_runtime_ones() {
    let s = schema();
    let e = s.b.pin::<0>().unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert_names(&e, &["position 1", "position 0"]);
    let mut wide = SchemaBuilder::new();
    let fields: Vec<Field<u8>> = (0..=mware::FRAME_FIELDS).map(|i| wide.hot(&format!("f{i}"))).collect();
    let e = fields[mware::FRAME_FIELDS].pin::<{ mware::FRAME_FIELDS }>().unwrap_err();
    assert_names(&e, &[&format!("below {}", mware::FRAME_FIELDS)]);

    // Foreign: a pinned handle of another schema at the same position.
    let other = schema();
    let (a, c) = (s.a.pin::<0>().unwrap(), other.c.pin::<2>().unwrap());
    let st =
        stage::parallel("pinned-stranger", (ReadAt(a), WriteAt(c)), |_: (&u32, &mut u64), _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).chain(chain![chain::before(st)]));
    assert_eq!(e, Error::ForeignField { stage: "pinned-stranger".into(), field: 2 });

    // Aliased: a pinned write beside a runtime read of the same field.
    let st =
        stage::parallel("pinned-alias", (Read(s.a), WriteAt(a)), |_: (&u32, &mut u32), _: &mut RowCtl| {});
    let e = build_err(Pipeline::builder(&s.schema).before(st));
    assert_names(&e, &["pinned-alias", "alpha"]);

    // A cold Pod field pinned and read as hot.
    let mut sb = SchemaBuilder::new();
    let cold = sb.cold::<u32>("cold_one").pin::<0>().unwrap();
    let schema = sb.build().unwrap();
    let st = stage::parallel_chunks("pinned-hot-reader", ReadAt(cold), |_: &[u32], _: &mut Rows<'_>| {});
    let e = build_err(Pipeline::builder(&schema).after(st));
    assert_eq!(
        e,
        Error::StorageMismatch {
            stage: "pinned-hot-reader".into(),
            field: "cold_one".into(),
            expected: "hot"
        }
    );
}

mware::pinned_fields! {
    struct Pins {
        first: u32,
        /// Documented fields keep their docs.
        second: u64,
    }
}

/// The macro's positions follow the declaration; declared after another
/// field, they no longer match and `declare` says which.
#[test]
fn pinned_fields_declare_in_order_or_say_why_not() {
    let mut s = SchemaBuilder::new();
    let pins = Pins::declare(&mut s).unwrap();
    let schema = s.build().unwrap();
    assert_eq!((pins.first.field().index(), pins.second.field().index()), (0, 1));
    assert_eq!(schema.fields()[1].name, "second");

    let mut s = SchemaBuilder::new();
    let _ = s.hot::<u8>("before");
    let e = Pins::declare(&mut s).err().expect("positions are off by one");
    assert_names(&e, &["position 1", "position 0"]);
}
