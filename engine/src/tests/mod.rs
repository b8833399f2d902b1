//! The engine's own tests, by subject: the facade's behaviour, the blob
//! store (recovery, scrub, GC), the write lanes, the one-round commit, and
//! the I/O seam.

mod blob_store;
mod facade;
mod io_seam;
mod lanes;
mod round;
