//! OCI error codes and the JSON error envelope. One exhaustive table maps
//! each code to its HTTP status, so a response's status and code never
//! disagree.

use berth_engine::EngineError;

use crate::exchange::{Body, Response};

/// The error codes of the OCI distribution spec, plus the legacy codes
/// registry:2 clients know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob unknown to registry (404).
    BlobUnknown,
    /// Blob upload invalid (400).
    BlobUploadInvalid,
    /// Upload session unknown (404).
    BlobUploadUnknown,
    /// Digest invalid or not matching the content (400).
    DigestInvalid,
    /// Manifest references a blob or manifest the repository lacks (400).
    ManifestBlobUnknown,
    /// Manifest invalid (400).
    ManifestInvalid,
    /// Manifest unknown (404).
    ManifestUnknown,
    /// Invalid repository name (400).
    NameInvalid,
    /// Repository unknown (404).
    NameUnknown,
    /// Length mismatch (400).
    SizeInvalid,
    /// Authentication required (401).
    Unauthorized,
    /// Access denied (403).
    Denied,
    /// Operation unsupported (405).
    Unsupported,
    /// Too many requests (429).
    TooManyRequests,
    /// Range not satisfiable or out-of-order chunk (416).
    RangeInvalid,
    /// Invalid pagination number (400).
    PaginationNumberInvalid,
    /// Invalid tag (400).
    TagInvalid,
    /// Body too large (413).
    SizeTooLarge,
    /// Internal error (500).
    Unknown,
    /// A service berth depends on (a pull-through cache's upstream) is
    /// unavailable (503), as registry:2's `UNAVAILABLE`.
    Unavailable,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::SizeTooLarge => "SIZE_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status the code is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationNumberInvalid
            | ErrorCode::TagInvalid => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::Unsupported => 405,
            ErrorCode::SizeTooLarge => 413,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Unknown => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// An API error: a code, a human message and structured detail.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The OCI code.
    pub code: ErrorCode,
    /// What went wrong, for humans.
    pub message: String,
    /// Machine-readable detail (e.g. the digest that is unknown).
    pub detail: serde_json::Value,
    /// Overrides the code's status (only for routing errors: 404 with UNSUPPORTED).
    pub status: Option<u16>,
}

impl ApiError {
    /// An error with no detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            status: None,
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = detail;
        self
    }

    /// The status to send.
    pub fn status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// The JSON error envelope `{"errors":[{code,message,detail}]}`.
    pub fn body(&self) -> Vec<u8> {
        let detail = if self.detail.is_null() {
            serde_json::json!({})
        } else {
            self.detail.clone()
        };
        let envelope = serde_json::json!({
            "errors": [{"code": self.code.as_str(), "message": self.message, "detail": detail}]
        });
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// The answer for a path no API route matches.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        let mut e = ApiError::new(
            ErrorCode::Unsupported,
            format!("no API route for {method} {path}"),
        );
        e.status = Some(404);
        e
    }

    /// The answer for a route that exists but not with this method.
    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            ErrorCode::Unsupported,
            format!("method {method} is not supported here"),
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let message = e.to_string();
        match e {
            EngineError::NameUnknown => ApiError::new(ErrorCode::NameUnknown, message),
            EngineError::BlobUnknown(d) => ApiError::new(ErrorCode::BlobUnknown, message)
                .with_detail(serde_json::json!({"digest": d})),
            EngineError::ManifestUnknown => ApiError::new(ErrorCode::ManifestUnknown, message),
            EngineError::UploadUnknown => ApiError::new(ErrorCode::BlobUploadUnknown, message),
            EngineError::RangeMismatch { .. } => ApiError::new(ErrorCode::RangeInvalid, message),
            EngineError::UploadBusy => ApiError::new(ErrorCode::RangeInvalid, message),
            EngineError::TooManyUploads { .. } => {
                ApiError::new(ErrorCode::TooManyRequests, message)
            }
            EngineError::DigestMismatch { expected, actual } => {
                ApiError::new(ErrorCode::DigestInvalid, message)
                    .with_detail(serde_json::json!({"expected": expected, "actual": actual}))
            }
            EngineError::ManifestInvalid(berth_engine::ManifestError::SizeMismatch {
                digest,
                declared,
                stored,
                ..
            }) => ApiError::new(ErrorCode::ManifestInvalid, message).with_detail(
                serde_json::json!({"digest": digest, "size": declared, "stored": stored}),
            ),
            EngineError::ManifestInvalid(_) => ApiError::new(ErrorCode::ManifestInvalid, message),
            EngineError::ManifestBlobUnknown(d) => {
                ApiError::new(ErrorCode::ManifestBlobUnknown, message)
                    .with_detail(serde_json::json!({"digest": d}))
            }
            EngineError::Corrupt(_)
            | EngineError::PreviousIo
            | EngineError::Io(_)
            | EngineError::Locked(_) => {
                log::error!("storage error: {message}");
                ApiError::new(ErrorCode::Unknown, message)
            }
        }
    }
}

impl Response {
    /// The OCI error envelope for `error`, with its status.
    pub fn error(error: &ApiError) -> Response {
        let mut response = Response::new(error.status())
            .header("Content-Type", "application/json")
            .body(Body::Bytes(error.body()));
        response.error = Some(error.code.as_str());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_spec_shape() {
        let e = ApiError::new(ErrorCode::BlobUnknown, "nope");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "nope");
        assert!(v["errors"][0]["detail"].is_object());
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn a_wrong_descriptor_size_is_manifest_invalid_naming_both_sizes() {
        let digest: berth_engine::Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let e = ApiError::from(EngineError::ManifestInvalid(
            berth_engine::ManifestError::SizeMismatch {
                digest: digest.clone(),
                declared: 7,
                stored: 9,
                what: "blob",
            },
        ));
        assert_eq!((e.code, e.status()), (ErrorCode::ManifestInvalid, 400));
        assert!(
            e.message.contains(&digest.to_string())
                && e.message.contains('7')
                && e.message.contains('9')
        );
        assert_eq!(
            e.detail,
            serde_json::json!({"digest": digest.to_string(), "size": 7, "stored": 9})
        );
    }

    #[test]
    fn statuses_follow_the_spec_table() {
        let table = [
            (ErrorCode::BlobUnknown, 404),
            (ErrorCode::BlobUploadUnknown, 404),
            (ErrorCode::DigestInvalid, 400),
            (ErrorCode::ManifestBlobUnknown, 400),
            (ErrorCode::ManifestInvalid, 400),
            (ErrorCode::ManifestUnknown, 404),
            (ErrorCode::NameInvalid, 400),
            (ErrorCode::NameUnknown, 404),
            (ErrorCode::SizeInvalid, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::Denied, 403),
            (ErrorCode::Unsupported, 405),
            (ErrorCode::TooManyRequests, 429),
            (ErrorCode::RangeInvalid, 416),
        ];
        for (code, status) in table {
            assert_eq!(code.status(), status, "{code:?}");
        }
    }
}
