//! Inputs shared by berth's benchmarks, built deterministically so every
//! run measures the same bytes.

pub mod disk;

/// A docker-push-shaped request head (PATCH with a chunked body).
pub const PATCH_HEAD: &[u8] = b"PATCH /v2/library/app/blobs/uploads/0b7e1a0c-3b1e-4d7e-9a53-5a8d1f3c2b11 HTTP/1.1\r\n\
Host: registry.example.com:5000\r\n\
User-Agent: docker/28.2.2 go/go1.24.3 git-commit/e6534b4 kernel/6.1.0 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))\r\n\
Transfer-Encoding: chunked\r\n\
Content-Type: application/octet-stream\r\n\
Accept-Encoding: gzip\r\n\
Authorization: Basic dGVzdHVzZXI6dGVzdHBhc3N3b3Jk\r\n\r\n";

/// `len` pseudo-random bytes (xorshift64), the same for every run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `payload` framed as a chunked body with chunks of `chunk_len` bytes.
pub fn chunked(payload: &[u8], chunk_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / chunk_len.max(1) * 12 + 8);
    for piece in payload.chunks(chunk_len.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A typical OCI image manifest with `layers` layers.
pub fn image_manifest(layers: usize) -> Vec<u8> {
    let digest = |i: usize| format!("sha256:{:064x}", i + 1);
    let layers: Vec<_> = (0..layers)
        .map(|i| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(i + 1), "size": 1000 + i}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(0), "size": 1234},
        "layers": layers,
        "annotations": {"org.opencontainers.image.created": "2026-11-26T00:00:00Z"}
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_valid_for_the_code_they_feed() {
        let head =
            berth_http::parse_request_head(PATCH_HEAD, &berth_http::Limits::default()).unwrap();
        assert!(head.is_some());
        let body = chunked(&random_bytes(1000, 1), 64);
        let mut decoder = berth_http::BodyDecoder::new(&berth_http::BodyFraming::Chunked);
        let mut rest = &body[..];
        let mut total = 0;
        while !decoder.is_done() {
            let d = decoder.decode(rest).unwrap();
            total += d.data.len();
            rest = &rest[d.consumed..];
        }
        assert_eq!(total, 1000);
        assert!(berth_engine::manifest::parse_manifest(None, &image_manifest(5)).is_ok());
    }
}
