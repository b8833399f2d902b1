//! Maps a request path to an API route. Pure: no I/O, no validation beyond
//! splitting. Repository names may contain `/` and path components such as
//! `blobs` or `manifests`, so each route is found by its *last* marker, and
//! a marker only counts when what follows it has no `/`.

/// Which API endpoint a path names. Names and references are raw
/// (percent-decoded) strings; handlers validate them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/` — the load balancer probe.
    Root,
    /// `/v2/` — API version check.
    Base,
    /// `/debug` and everything under it: never served on the public port
    /// (404 with or without credentials); the debug listener
    /// (`http.debug.addr`) serves health and metrics.
    Debug,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags {
        /// Repository name.
        name: String,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository name.
        name: String,
        /// Tag or digest.
        reference: String,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository name.
        name: String,
        /// Digest.
        digest: String,
    },
    /// `/v2/<name>/blobs/uploads/` — start an upload.
    UploadStart {
        /// Repository name.
        name: String,
    },
    /// `/v2/<name>/blobs/uploads/<id>` — an upload session.
    Upload {
        /// Repository name.
        name: String,
        /// Session id.
        id: String,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository name.
        name: String,
        /// Subject digest.
        digest: String,
    },
    /// Anything else.
    NotFound,
}

fn split_last<'a>(path: &'a str, marker: &str) -> Option<(&'a str, &'a str)> {
    let (name, rest) = path.rsplit_once(marker)?;
    (!name.is_empty() && !rest.is_empty() && !rest.contains('/')).then_some((name, rest))
}

/// Routes a percent-decoded path (without the query string).
pub fn route(path: &str) -> Route {
    if path == "/" {
        return Route::Root;
    }
    if path == "/debug" || path.starts_with("/debug/") {
        return Route::Debug;
    }
    let Some(api) = path.strip_prefix("/v2") else {
        return Route::NotFound;
    };
    if api.is_empty() || api == "/" {
        return Route::Base;
    }
    let Some(p) = api.strip_prefix('/') else {
        return Route::NotFound;
    };
    if p == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = p.strip_suffix("/tags/list") {
        if !name.is_empty() {
            return Route::Tags {
                name: name.to_owned(),
            };
        }
    }
    if let Some((name, reference)) = split_last(p, "/manifests/") {
        return Route::Manifest {
            name: name.to_owned(),
            reference: reference.to_owned(),
        };
    }
    if let Some(name) = p
        .strip_suffix("/blobs/uploads")
        .or_else(|| p.strip_suffix("/blobs/uploads/"))
    {
        if !name.is_empty() {
            return Route::UploadStart {
                name: name.to_owned(),
            };
        }
    }
    if let Some((name, id)) = split_last(p, "/blobs/uploads/") {
        return Route::Upload {
            name: name.to_owned(),
            id: id.to_owned(),
        };
    }
    if let Some((name, digest)) = split_last(p, "/blobs/") {
        return Route::Blob {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    if let Some((name, digest)) = split_last(p, "/referrers/") {
        return Route::Referrers {
            name: name.to_owned(),
            digest: digest.to_owned(),
        };
    }
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn routes_every_endpoint() {
        assert_eq!(route("/"), Route::Root);
        assert_eq!(route("/debug/health"), Route::Debug);
        assert_eq!(route("/debug/metrics"), Route::Debug);
        assert_eq!(route("/debug/pprof/heap"), Route::Debug);
        assert_eq!(route("/debug"), Route::Debug);
        assert_eq!(route("/debugger"), Route::NotFound);
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags { name: s("a/b") });
        assert_eq!(
            route("/v2/a/manifests/latest"),
            Route::Manifest {
                name: s("a"),
                reference: s("latest")
            }
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Route::Blob {
                name: s("a"),
                digest: s("sha256:00")
            }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/"),
            Route::UploadStart { name: s("a") }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads"),
            Route::UploadStart { name: s("a") }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/u-1"),
            Route::Upload {
                name: s("a"),
                id: s("u-1")
            }
        );
        assert_eq!(
            route("/v2/a/referrers/sha256:00"),
            Route::Referrers {
                name: s("a"),
                digest: s("sha256:00")
            }
        );
    }

    #[test]
    fn names_may_contain_route_words() {
        assert_eq!(
            route("/v2/x/blobs/y/manifests/latest"),
            Route::Manifest {
                name: s("x/blobs/y"),
                reference: s("latest")
            }
        );
        assert_eq!(
            route("/v2/a/manifests/blobs/sha256:00"),
            Route::Blob {
                name: s("a/manifests"),
                digest: s("sha256:00")
            }
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/blobs/uploads/"),
            Route::UploadStart {
                name: s("a/blobs/uploads")
            }
        );
        assert_eq!(
            route("/v2/tags/list/tags/list"),
            Route::Tags {
                name: s("tags/list")
            }
        );
        assert_eq!(
            route("/v2/uploads/blobs/uploads/blobs/sha256:1"),
            Route::Blob {
                name: s("uploads/blobs/uploads"),
                digest: s("sha256:1")
            }
        );
    }

    #[test]
    fn everything_else_is_not_found() {
        for p in [
            "",
            "/v1/",
            "/v2x",
            "/v2/a",
            "/v2/a/blobs/",
            "/v2//manifests/x",
            "/v2/a/manifests/x/y",
            "/v2/tags/list",
        ] {
            assert_eq!(route(p), Route::NotFound, "{p}");
        }
    }
}
