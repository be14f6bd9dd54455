//! Extractors for namespaced routes: they read `{namespace}` (and `{name}`) from the
//! path, check them as DNS labels, and authorize the caller for the namespace, so a
//! handler cannot forget to and every area answers the same 401/403/422.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, FromRequest, HttpMessage, HttpRequest};

use super::errors::ApiError;
use crate::auth::{validate_dns_label, Principal};

fn caller(req: &HttpRequest) -> Result<Principal, ApiError> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))
}

fn segment<'a>(req: &'a HttpRequest, key: &str) -> Result<&'a str, ApiError> {
    req.match_info()
        .get(key)
        .ok_or_else(|| ApiError::Internal(format!("route has no {{{key}}} segment")))
}

/// `/hearth/v1/namespaces/{namespace}/...`, authorized for the caller.
pub struct Namespaced {
    pub namespace: String,
}

/// `/hearth/v1/namespaces/{namespace}/<kind>/{name}`, authorized for the caller.
pub struct NamespacedItem {
    pub namespace: String,
    pub name: String,
}

fn namespaced(req: &HttpRequest) -> Result<Namespaced, ApiError> {
    let caller = caller(req)?;
    let namespace = segment(req, "namespace")?.to_string();
    caller.authorize_namespace(&namespace)?;
    Ok(Namespaced { namespace })
}

impl FromRequest for Namespaced {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(namespaced(req))
    }
}

impl FromRequest for NamespacedItem {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(namespaced(req).and_then(|scope| {
            let name = segment(req, "name")?.to_string();
            validate_dns_label("name", &name)?;
            Ok(NamespacedItem {
                namespace: scope.namespace,
                name,
            })
        }))
    }
}
