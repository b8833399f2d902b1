//! Bearer-token auth (`auth.token`) with tokens this test mints: RS256,
//! ES256 and EdDSA keys from a root-certificate bundle (matched by the
//! libtrust key id registry:2 uses) and from a JWK set; scopes per request;
//! 401 challenges naming the scope; expired, foreign-signed, wrong-audience
//! and under-scoped tokens refused with nothing changed.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use berth_tests::http::request;
use berth_tests::registry::{Registry, RegistryCommand};
use berth_tests::tokens::{mint, now, openssl, signer, ISSUER};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

const SERVICE: &str = "berth-test";

fn start(dir: &Path, bundle: &Path, jwks: Option<&Path>) -> Option<Registry> {
    let mut command = RegistryCommand::from_env();
    if !command.is_berth {
        return None;
    }
    let mut env = vec![
        ("REGISTRY_AUTH", "token".to_string()),
        (
            "REGISTRY_AUTH_TOKEN_REALM",
            "https://auth.example.com/token".to_string(),
        ),
        ("REGISTRY_AUTH_TOKEN_SERVICE", SERVICE.to_string()),
        ("REGISTRY_AUTH_TOKEN_ISSUER", ISSUER.to_string()),
        (
            "REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE",
            bundle.display().to_string(),
        ),
    ];
    if let Some(jwks) = jwks {
        env.push(("REGISTRY_AUTH_TOKEN_JWKS", jwks.display().to_string()));
    }
    for (k, v) in env {
        command.env.push((k.into(), v));
    }
    command.ready_log_line = Some("berth listening".into());
    Some(Registry::start_with(command, &dir.join("data")))
}

fn pull_push(repo: &str) -> serde_json::Value {
    serde_json::json!([{"type": "repository", "name": repo, "actions": ["pull", "push"]}])
}

const BLOB_DIGEST: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

fn push(r: &Registry, repo: &str, token: &str) -> berth_tests::http::HttpResponse {
    let auth = format!("Bearer {token}");
    request(
        "POST",
        &r.url(&format!("/v2/{repo}/blobs/uploads/?digest={BLOB_DIGEST}")),
        &[("Authorization", &auth)],
        Some(b"hello"),
    )
}

#[test]
fn tokens_from_every_algorithm_and_their_scopes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let rsa = signer(
        &keys,
        "rsa",
        "RS256",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = signer(
        &keys,
        "ec",
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ed = signer(&keys, "ed", "EdDSA", &["-algorithm", "ed25519"]);
    let foreign = signer(
        &keys,
        "foreign",
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let bundle = dir.path().join("bundle.pem");
    let text: String = [&rsa, &ec, &ed]
        .iter()
        .map(|s| std::fs::read_to_string(&s.cert).expect("cert"))
        .collect();
    std::fs::write(&bundle, text).expect("bundle");
    let Some(r) = start(dir.path(), &bundle, None) else {
        return;
    };
    let later = now() + 300;

    let anonymous = request("GET", &r.url("/v2/"), &[], None);
    assert_eq!(anonymous.status, 401);
    let challenge = anonymous
        .header("WWW-Authenticate")
        .expect("challenge")
        .to_owned();
    assert!(
        challenge
            .starts_with("Bearer realm=\"https://auth.example.com/token\",service=\"berth-test\""),
        "{challenge}"
    );
    assert_eq!(
        anonymous.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    let needs_scope = request("GET", &r.url("/v2/team/app/tags/list"), &[], None);
    assert!(needs_scope
        .header("WWW-Authenticate")
        .unwrap_or("")
        .contains("scope=\"repository:team/app:pull\""));

    for (i, s) in [&rsa, &ec, &ed].into_iter().enumerate() {
        let repo = format!("team/app{i}");
        let token = mint(s, &s.kid, pull_push(&repo), SERVICE, later);
        let res = push(&r, &repo, &token);
        assert_eq!(res.status, 201, "{} token refused: {}", s.alg, res.text());
        let auth = format!("Bearer {token}");
        assert_eq!(
            request(
                "GET",
                &r.url(&format!("/v2/{repo}/blobs/{BLOB_DIGEST}")),
                &[("Authorization", &auth)],
                None
            )
            .status,
            200
        );
        // The same token does not reach another repository.
        let other = request(
            "GET",
            &r.url("/v2/elsewhere/tags/list"),
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(other.status, 401);
        assert!(other
            .header("WWW-Authenticate")
            .unwrap_or("")
            .contains("error=\"insufficient_scope\""));
    }

    let pull_only = mint(
        &ec,
        &ec.kid,
        serde_json::json!([{"type": "repository", "name": "ro", "actions": ["pull"]}]),
        SERVICE,
        later,
    );
    let refused = push(&r, "ro", &pull_only);
    assert_eq!(refused.status, 401);
    let challenge = refused.header("WWW-Authenticate").unwrap_or("").to_owned();
    assert!(
        challenge.contains("scope=\"repository:ro:pull,push\"")
            && challenge.contains("insufficient_scope"),
        "{challenge}"
    );
    assert_eq!(refused.json()["errors"][0]["code"], "UNAUTHORIZED");

    for (what, token) in [
        (
            "expired",
            mint(&rsa, &rsa.kid, pull_push("x"), SERVICE, now() - 3600),
        ),
        (
            "foreign-signed",
            mint(&foreign, &foreign.kid, pull_push("x"), SERVICE, later),
        ),
        (
            "foreign key under a trusted kid",
            mint(&foreign, &ec.kid, pull_push("x"), SERVICE, later),
        ),
        (
            "wrong audience",
            mint(&rsa, &rsa.kid, pull_push("x"), "another-registry", later),
        ),
    ] {
        let res = push(&r, "x", &token);
        assert_eq!(res.status, 401, "{what} token accepted");
        assert!(
            res.header("WWW-Authenticate")
                .unwrap_or("")
                .contains("invalid_token"),
            "{what}"
        );
    }
    let tampered = {
        let token = mint(&rsa, &rsa.kid, pull_push("x"), SERVICE, later);
        let parts: Vec<&str> = token.split('.').collect();
        let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"test-token-issuer","aud":"berth-test","exp":99999999999,"access":[{"type":"registry","name":"catalog","actions":["*"]}]}"#);
        format!("{}.{}.{}", parts[0], claims, parts[2])
    };
    assert_eq!(
        request(
            "GET",
            &r.url("/v2/_catalog"),
            &[("Authorization", &format!("Bearer {tampered}"))],
            None
        )
        .status,
        401
    );

    let catalog = mint(
        &ed,
        &ed.kid,
        serde_json::json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]),
        SERVICE,
        later,
    );
    let listing = request(
        "GET",
        &r.url("/v2/_catalog"),
        &[("Authorization", &format!("Bearer {catalog}"))],
        None,
    );
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.json()["repositories"],
        serde_json::json!(["team/app0", "team/app1", "team/app2"]),
        "refused requests changed nothing"
    );
}

#[test]
fn jwks_keys_are_matched_by_kid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let bundled = signer(
        &keys,
        "bundled",
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ed = signer(&keys, "jwk-ed", "EdDSA", &["-algorithm", "ed25519"]);
    let public = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&ed.pkcs8)
        .expect("key")
        .public_key()
        .as_ref()
        .to_vec();
    let jwks = dir.path().join("jwks.json");
    let set = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "signing-key-1", "x": URL_SAFE_NO_PAD.encode(public)}]});
    std::fs::write(&jwks, serde_json::to_vec(&set).expect("json")).expect("jwks");
    let bundle = dir.path().join("bundle.pem");
    std::fs::copy(&bundled.cert, &bundle).expect("bundle");
    let Some(r) = start(dir.path(), &bundle, Some(&jwks)) else {
        return;
    };
    let token = mint(&ed, "signing-key-1", pull_push("jw"), SERVICE, now() + 300);
    assert_eq!(push(&r, "jw", &token).status, 201);
    let unknown_kid = mint(&ed, "signing-key-2", pull_push("jw"), SERVICE, now() + 300);
    assert_eq!(push(&r, "jw", &unknown_kid).status, 401);
}

/// A token whose header carries an `x5c` chain: its leaf certificate is
/// signed by a CA in the bundle (the leaf itself is not in the bundle).
#[test]
fn x5c_chains_to_a_bundle_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).expect("mkdir");
    let pki = berth_tests::certs::Pki::new(&keys.join("pki"));
    let leaf = signer(
        &keys,
        "leaf",
        "ES256",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    // Re-issue the leaf's key under the test root CA.
    let csr = keys.join("leaf.csr");
    let issued = keys.join("leaf-issued.crt");
    let ext = keys.join("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .expect("ext");
    openssl(
        &keys,
        &[
            "req",
            "-new",
            "-key",
            "leaf.key",
            "-subj",
            "/CN=token-leaf",
            "-out",
            csr.to_str().expect("utf-8"),
        ],
    );
    openssl(
        &keys,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().expect("utf-8"),
            "-CA",
            pki.root_cert.to_str().expect("utf-8"),
            "-CAkey",
            keys.join("pki/root.key").to_str().expect("utf-8"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            ext.to_str().expect("utf-8"),
            "-out",
            issued.to_str().expect("utf-8"),
        ],
    );
    let der = keys.join("leaf-issued.der");
    openssl(
        &keys,
        &[
            "x509",
            "-in",
            issued.to_str().expect("utf-8"),
            "-outform",
            "DER",
            "-out",
            der.to_str().expect("utf-8"),
        ],
    );
    let chain =
        vec![base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der).expect("der"))];
    let Some(r) = start(dir.path(), &pki.root_cert, None) else {
        return;
    };
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": chain});
    let claims = serde_json::json!({"iss": ISSUER, "aud": SERVICE, "exp": now() + 300, "access": pull_push("x5")});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("json")),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"))
    );
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &leaf.pkcs8,
        &rng,
    )
    .expect("key");
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(key.sign(&rng, input.as_bytes()).expect("sign").as_ref())
    );
    assert_eq!(push(&r, "x5", &token).status, 201, "{}", r.log_tail(10));
    // The same chain without a trusted issuer: a self-signed leaf.
    let self_signed = base64::engine::general_purpose::STANDARD.encode(
        std::fs::read(keys.join("leaf.crt"))
            .map(|pem| {
                let body: String = String::from_utf8_lossy(&pem)
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .expect("pem body")
            })
            .expect("leaf cert"),
    );
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self_signed]});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("json")),
        input.split('.').nth(1).expect("claims")
    );
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(key.sign(&rng, input.as_bytes()).expect("sign").as_ref())
    );
    assert_eq!(
        push(&r, "x5", &token).status,
        401,
        "an untrusted x5c chain was accepted"
    );
}
