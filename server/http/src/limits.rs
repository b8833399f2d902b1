//! Size limits applied while parsing a request head.

/// Upper bounds enforced by [`parse_request_head`](crate::parse_request_head).
///
/// Every limit is checked before the corresponding data is accepted, so a
/// peer can never make the parser hold more than `head_bytes_max` bytes of
/// head or more than `headers_max` header entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted request head in bytes, request line and final empty
    /// line included. Larger heads fail with
    /// [`HeadError::HeadTooLarge`](crate::HeadError::HeadTooLarge).
    pub head_bytes_max: usize,
    /// Largest accepted number of header fields. More fail with
    /// [`HeadError::TooManyHeaders`](crate::HeadError::TooManyHeaders).
    pub headers_max: usize,
    /// Largest accepted request-target in bytes. Longer targets fail with
    /// [`HeadError::TargetTooLong`](crate::HeadError::TargetTooLong).
    pub target_bytes_max: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 100 headers, 8 KiB of request-target.
    fn default() -> Self {
        Limits {
            head_bytes_max: 16 * 1024,
            headers_max: 100,
            target_bytes_max: 8 * 1024,
        }
    }
}
