//! `GET /v2/<name>/referrers/<digest>[?artifactType=]` (OCI 1.1): an image
//! index listing the manifests whose `subject` is the digest. An unknown
//! repository or digest has an empty list, never a 404.

use berth_engine::{Digest, RepositoryName};

use super::ctx::Ctx;
use super::query::Query;
use crate::exchange::Response;
use crate::oci_error::ApiError;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Lists the referrers of `subject`, filtered by `artifactType` if given.
pub fn list(
    ctx: &Ctx,
    repo: &RepositoryName,
    subject: &Digest,
    query: &Query,
) -> Result<Response, ApiError> {
    let filter = query.get("artifactType").filter(|t| !t.is_empty());
    let referrers = ctx.engine.referrers(repo, subject, filter)?;
    let manifests: Vec<serde_json::Value> = referrers
        .into_iter()
        .map(|r| {
            let mut descriptor = serde_json::json!({
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            });
            if let Some(artifact_type) = r.artifact_type {
                descriptor["artifactType"] = artifact_type.into();
            }
            if let Some(annotations) = r.annotations {
                descriptor["annotations"] = annotations.into();
            }
            descriptor
        })
        .collect();
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let mut response = Response::json(200, &index);
    if let Some((_, content_type)) = response
        .headers
        .iter_mut()
        .find(|(name, _)| *name == "Content-Type")
    {
        *content_type = OCI_INDEX.to_owned();
    }
    if filter.is_some() {
        response = response.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(response)
}
