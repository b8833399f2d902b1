//! Authentication and authorization: who may use the API. htpasswd basic
//! auth (any valid user may do anything) or bearer tokens (each request
//! needs the scopes it touches). `GET /` and `/debug/health` stay open for
//! load balancers. A request without valid credentials gets 401 with a
//! `WWW-Authenticate` challenge and the handler never runs, so nothing
//! changes.

pub mod failures;
pub mod htpasswd;
pub mod token;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::exchange::{Request, Response};
use crate::oci_error::{ApiError, ErrorCode};
use htpasswd::{Htpasswd, Verdict};

/// The configured authenticator.
#[derive(Clone)]
pub enum Auth {
    /// Everyone may do everything (registry:2 without `auth`).
    Anonymous,
    /// htpasswd basic auth.
    Htpasswd(Arc<Htpasswd>),
    /// Bearer tokens from an external token service.
    Token(Arc<token::TokenAuth>),
}

/// The `Basic` credentials of a request, if well-formed.
fn basic_credentials(request: &Request<'_>) -> Option<(String, String)> {
    parse_basic(request.head.headers.get("authorization")?)
}

/// Decodes an `Authorization: Basic base64(user:password)` value (the
/// password may contain ':'; the user may not). Fuzzed (`fuzz/checks/auth.rs`).
pub fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The error detail registry:2 sends with a 401: the accesses the request
/// needed (`null`, sent as `{}`, for `/v2/` itself).
fn access_detail(scopes: &[token::Scope]) -> serde_json::Value {
    if scopes.is_empty() {
        return serde_json::Value::Null;
    }
    scopes
        .iter()
        .flat_map(|s| s.actions.iter().map(move |a| serde_json::json!({"Type": s.kind, "Class": "", "Name": s.name, "Action": a})))
        .collect()
}

/// The Basic challenge registry:2's htpasswd access controller sends.
fn challenge(realm: &str, scopes: &[token::Scope]) -> Response {
    let error = ApiError::new(ErrorCode::Unauthorized, "authentication required")
        .with_detail(access_detail(scopes));
    let realm = realm.replace(['"', '\\'], "'");
    Response::error(&error).header("WWW-Authenticate", format!("Basic realm=\"{realm}\""))
}

/// The Bearer challenge for `scopes`, with `error` when a token was sent.
fn bearer_challenge(
    tokens: &token::TokenAuth,
    scopes: &[token::Scope],
    error: Option<&str>,
) -> Response {
    let settings = tokens.settings();
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        settings.realm, settings.service
    );
    if !scopes.is_empty() {
        let joined: Vec<String> = scopes.iter().map(token::Scope::to_challenge).collect();
        value.push_str(&format!(",scope=\"{}\"", joined.join(" ")));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    let message = match error {
        Some("insufficient_scope") => {
            "authentication required: the token does not grant this access"
        }
        _ => "authentication required",
    };
    let body = ApiError::new(ErrorCode::Unauthorized, message).with_detail(access_detail(scopes));
    Response::error(&body).header("WWW-Authenticate", value)
}

/// The answer to a login attempt past the failure limit: 429 with the
/// spec's `TOOMANYREQUESTS` body and when to try again.
fn too_many_failures(retry_after: std::time::Duration) -> Response {
    let error = ApiError::new(
        ErrorCode::TooManyRequests,
        "too many failed logins for this user or from this address; try again later",
    );
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    Response::error(&error).header("Retry-After", seconds.max(1).to_string())
}

fn bearer_token<'r>(request: &'r Request<'_>) -> Option<&'r str> {
    parse_bearer(request.head.headers.get("authorization")?)
}

/// The token of an `Authorization: Bearer <token>` value. Fuzzed
/// (`fuzz/checks/auth.rs`).
pub fn parse_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Auth {
    /// The authenticated user (`None` when anonymous access is configured),
    /// or the 401 response to send instead of running the request. `scopes`
    /// are the accesses the request needs (checked for token auth).
    pub async fn authenticate(
        &self,
        request: &Request<'_>,
        scopes: &[token::Scope],
        path_is_open: bool,
    ) -> Result<Option<String>, Response> {
        if path_is_open {
            return Ok(None);
        }
        let store = match self {
            Auth::Anonymous => return Ok(None),
            Auth::Htpasswd(store) => store,
            Auth::Token(tokens) => {
                let Some(token) = bearer_token(request) else {
                    return Err(bearer_challenge(tokens, scopes, None));
                };
                let grants = match tokens.verify(token) {
                    Ok(grants) => grants,
                    Err(e) => {
                        log::info!("{}: bearer token refused: {e}", request.peer);
                        return Err(bearer_challenge(tokens, scopes, Some("invalid_token")));
                    }
                };
                if let Some(missing) = scopes.iter().find(|s| !grants.allows(s)) {
                    log::info!("{}: token lacks {}", request.peer, missing.to_challenge());
                    return Err(bearer_challenge(tokens, scopes, Some("insufficient_scope")));
                }
                return Ok(Some(grants.subject.unwrap_or_else(|| "token".into())));
            }
        };
        let Some((user, password)) = basic_credentials(request) else {
            return Err(challenge(store.realm(), scopes));
        };
        let verdict = match store.check_cached(&user, &password, request.peer.ip()) {
            Ok(verdict) => verdict,
            Err(job) => compio::runtime::spawn_blocking(move || job.run())
                .await
                .unwrap_or(Verdict::Denied),
        };
        match verdict {
            Verdict::Allowed(user) => Ok(Some(user)),
            Verdict::Denied => {
                // Per request at debug level only: a burst is logged once
                // by the failure limiter.
                log::debug!("{}: authentication failed for user {user:?}", request.peer);
                Err(challenge(store.realm(), scopes))
            }
            Verdict::Limited { retry_after } => Err(too_many_failures(retry_after)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::Body;

    fn body_json(response: &Response) -> serde_json::Value {
        match &response.body {
            Body::Bytes(bytes) => serde_json::from_slice(bytes).unwrap(),
            other => panic!("not a JSON body: {other:?}"),
        }
    }

    fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_basic_challenge_is_registry2s() {
        let response = challenge("Registry Realm", &[]);
        assert_eq!(response.status, 401);
        assert_eq!(
            header(&response, "WWW-Authenticate"),
            Some("Basic realm=\"Registry Realm\"")
        );
        assert_eq!(header(&response, "Content-Type"), Some("application/json"));
        let body = body_json(&response);
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
        assert_eq!(body["errors"][0]["message"], "authentication required");
        assert!(response.user.is_none());

        // A repository request names what it needed, as registry:2 does.
        let push = [
            token::Scope::repository("foo", &["pull", "push"]),
            token::Scope::repository("bar", &["pull"]),
        ];
        let body = body_json(&challenge("r", &push));
        assert_eq!(
            body["errors"][0]["detail"],
            serde_json::json!([
                {"Type": "repository", "Class": "", "Name": "foo", "Action": "pull"},
                {"Type": "repository", "Class": "", "Name": "foo", "Action": "push"},
                {"Type": "repository", "Class": "", "Name": "bar", "Action": "pull"},
            ])
        );
        let body = body_json(&challenge("r", &[token::Scope::catalog()]));
        assert_eq!(
            body["errors"][0]["detail"],
            serde_json::json!([{"Type": "registry", "Class": "", "Name": "catalog", "Action": "*"}])
        );

        // A quote in the realm cannot break out of the parameter.
        let response = challenge("a\"b\\", &[]);
        assert_eq!(
            header(&response, "WWW-Authenticate"),
            Some("Basic realm=\"a'b'\"")
        );
    }

    #[test]
    fn too_many_failures_is_a_429_with_the_spec_code() {
        let response = too_many_failures(std::time::Duration::from_millis(41_200));
        assert_eq!(response.status, 429);
        assert_eq!(header(&response, "Retry-After"), Some("42"));
        assert_eq!(body_json(&response)["errors"][0]["code"], "TOOMANYREQUESTS");
        assert!(header(&response, "WWW-Authenticate").is_none());
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let encode = |s: &str| STANDARD.encode(s);
        assert_eq!(
            parse_basic(&format!("Basic {}", encode("testuser:testpassword"))),
            Some(("testuser".into(), "testpassword".into()))
        );
        assert_eq!(
            parse_basic(&format!("basic  {} ", encode("u:pa:ss"))),
            Some(("u".into(), "pa:ss".into()))
        );
        assert_eq!(
            parse_basic(&format!("Basic {}", encode("u:"))),
            Some(("u".into(), String::new()))
        );
        assert_eq!(parse_basic(&format!("Basic {}", encode("nocolon"))), None);
        assert_eq!(parse_basic(&format!("Bearer {}", encode("u:p"))), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic"), None);
    }
}
