//! The storage engine against a reference model: random sequences of
//! push / manifest / tag / delete / mount / GC / reopen, checked after every
//! step (`berth_engine::model_check`). Each input runs in a fresh directory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    // Bounded: every operation fsyncs, so long inputs would only be slow.
    let ops = &data[..data.len().min(192)];
    if let Err(divergence) = berth_engine::model_check::run(dir.path(), ops) {
        panic!("the engine diverged from the model: {divergence}");
    }
});
