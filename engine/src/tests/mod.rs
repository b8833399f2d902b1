//! The engine's own tests, by subject: the facade's behaviour, the blob
//! store (recovery, scrub, GC), the write lanes, and the one-round commit.

mod blob_store;
mod facade;
mod lanes;
mod round;
