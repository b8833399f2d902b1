//! Signed upload state (`http.secret`), as registry:2 does it: every upload
//! `Location` carries `_state=<token>`, an HMAC-SHA256-signed record of the
//! repository, session id and offset. A node that shares the secret can
//! trust a token another node issued; a token signed with another secret, or
//! altered, is refused with a clear error instead of being guessed at.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token records about an upload session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    /// Repository name.
    pub name: String,
    /// Session id.
    pub uuid: String,
    /// Bytes received when the token was issued.
    pub offset: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not `<payload>.<mac>` in base64url, or the payload is not a state.
    #[error("the _state parameter is malformed")]
    Malformed,
    /// The MAC does not match: another secret signed it, or it was altered.
    #[error("the _state parameter was not signed with this registry's http.secret (is every node configured with the same secret?)")]
    BadSignature,
}

/// Signs and verifies upload-state tokens with the registry's secret.
#[derive(Clone)]
pub struct UploadStateCodec {
    secret: Vec<u8>,
}

impl fmt::Debug for UploadStateCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UploadStateCodec(<secret>)")
    }
}

impl UploadStateCodec {
    /// A codec keyed with `secret`.
    pub fn new(secret: &[u8]) -> UploadStateCodec {
        UploadStateCodec {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(payload);
        mac
    }

    /// The token for `state`.
    pub fn sign(&self, state: &UploadState) -> String {
        let payload = serde_json::to_vec(state).unwrap_or_default();
        let tag = self.mac(&payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The state in `token`, if this secret signed it (constant-time check).
    pub fn verify(&self, token: &str) -> Result<UploadState, StateError> {
        let (payload, tag) = token.split_once('.').ok_or(StateError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| StateError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| StateError::Malformed)?;
        self.mac(&payload)
            .verify_slice(&tag)
            .map_err(|_| StateError::BadSignature)?;
        serde_json::from_slice(&payload).map_err(|_| StateError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> UploadState {
        UploadState {
            name: "a/b".into(),
            uuid: "u".into(),
            offset: 42,
        }
    }

    #[test]
    fn round_trips_and_refuses_other_secrets_and_tampering() {
        let codec = UploadStateCodec::new(b"secret one");
        let token = codec.sign(&state());
        assert_eq!(codec.verify(&token), Ok(state()));
        assert_eq!(
            UploadStateCodec::new(b"secret two").verify(&token),
            Err(StateError::BadSignature)
        );
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = UploadState {
            offset: 0,
            ..state()
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            codec.verify(&format!("{forged_payload}.{tag}")),
            Err(StateError::BadSignature)
        );
        assert_eq!(codec.verify(payload), Err(StateError::Malformed));
        assert_eq!(codec.verify("!!.??"), Err(StateError::Malformed));
    }
}
