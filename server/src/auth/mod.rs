//! Authentication: who may use the API. Today htpasswd basic auth;
//! `GET /` and `/debug/health` stay open for load balancers. A request
//! without valid credentials gets 401 with a `WWW-Authenticate` challenge
//! and the handler never runs, so nothing changes.

pub mod htpasswd;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::response::Response;
use crate::conn::Request;
use htpasswd::{Htpasswd, Verdict};

/// The configured authenticator.
#[derive(Clone)]
pub enum Auth {
    /// Everyone may do everything (registry:2 without `auth`).
    Anonymous,
    /// htpasswd basic auth.
    Htpasswd(Arc<Htpasswd>),
}

/// The `Basic` credentials of a request, if well-formed.
fn basic_credentials(request: &Request<'_>) -> Option<(String, String)> {
    let value = request.head.headers.get("authorization")?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn challenge(realm: &str) -> Response {
    let error = ApiError::new(ErrorCode::Unauthorized, "authentication required")
        .with_detail(serde_json::json!([{"Type": "registry", "Name": "catalog", "Action": "*"}]));
    let realm = realm.replace('"', "'");
    Response::error(&error).header("WWW-Authenticate", format!("Basic realm=\"{realm}\""))
}

impl Auth {
    /// The authenticated user (`None` when anonymous access is configured),
    /// or the 401 response to send instead of running the request.
    pub async fn authenticate(&self, request: &Request<'_>, path_is_open: bool) -> Result<Option<String>, Response> {
        let store = match self {
            Auth::Anonymous => return Ok(None),
            Auth::Htpasswd(store) => store,
        };
        if path_is_open {
            return Ok(None);
        }
        let Some((user, password)) = basic_credentials(request) else {
            return Err(challenge(store.realm()));
        };
        let verdict = match store.check_cached(&user, &password) {
            Ok(verdict) => verdict,
            Err(job) => compio::runtime::spawn_blocking(move || job.run()).await.unwrap_or(Verdict::Denied),
        };
        match verdict {
            Verdict::Allowed(user) => Ok(Some(user)),
            Verdict::Denied => {
                log::info!("{}: authentication failed for user {user:?}", request.peer);
                Err(challenge(store.realm()))
            }
        }
    }
}
