//! Where the route declarations go. Each area declares its routes once, in a
//! `routes(&mut Routes)` function; a worker's router takes only the handlers, and the
//! OpenAPI document (`hearth openapi`, `/openapi.json`, the 404/405 table) takes their
//! paths and schemas too.
//!
//! Why two targets rather than `utoipa-actix-web` for both: that crate builds every
//! operation and schema of a service while registering it, in every worker, and drops
//! them. That is about 1.7 MB of code run and a few MB of heap churned at each start
//! for nothing a worker uses; an idle daemon should only pay for the document when
//! someone asks for it (README, Performance).

use actix_web::dev::HttpServiceFactory;
use actix_web::Route;
use utoipa_actix_web::OpenApiFactory;

/// A worker's router, or the OpenAPI document's collector.
pub enum Routes<'a, 's> {
    /// Registers the handlers only.
    Router(&'a mut actix_web::web::ServiceConfig),
    /// Registers the handlers and collects their paths and schemas.
    Document(&'a mut utoipa_actix_web::service_config::ServiceConfig<'s>),
}

impl Routes<'_, '_> {
    /// A handler declared with `#[utoipa::path]` and an actix route macro.
    pub fn service<F>(&mut self, factory: F) -> &mut Self
    where
        F: HttpServiceFactory + OpenApiFactory + 'static,
    {
        match self {
            Routes::Router(cfg) => {
                cfg.service(factory);
            }
            Routes::Document(cfg) => {
                cfg.service(factory);
            }
        }
        self
    }

    /// A route the document does not describe.
    pub fn route(&mut self, path: &str, route: Route) -> &mut Self {
        match self {
            Routes::Router(cfg) => {
                cfg.route(path, route);
            }
            Routes::Document(cfg) => {
                cfg.route(path, route);
            }
        }
        self
    }
}
