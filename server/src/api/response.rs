//! The API's answers: the exchange's [`Response`] and [`Body`], plus the
//! OCI error envelope as a response (`Response::error`, in
//! [`crate::oci_error`]).

pub use crate::exchange::{Body, Response};
