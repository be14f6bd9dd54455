//! The Kubernetes paths of each kind, declared once per kind (so OpenAPI documents
//! every path with its kind's schema) over the generic handlers. Operation ids are the
//! Kubernetes API's own (`listNamespacedJob`, `patchNamespacedJobStatus`, ...).

/// Declares a kind's paths: the namespaced collection, item and `status` item, and the
/// all-namespaces list.
macro_rules! kind_routes {
    (
        $module:ident, $kind:path, $tag:tt, $schema:ty,
        collection: $collection:tt, item: $item:tt, status: $status:tt, all: $all:tt,
        ops: [$list_op:tt, $create_op:tt, $read_op:tt, $replace_op:tt, $patch_op:tt,
              $delete_op:tt, $read_status_op:tt, $replace_status_op:tt, $patch_status_op:tt,
              $list_all_op:tt]
    ) => {
        pub mod $module {
            use actix_web::http::header;
            use actix_web::{delete, get, patch, post, put, web, HttpRequest, HttpResponse};

            use crate::http::auth::Caller;
            use crate::http::body::Document;
            use crate::http::errors::ApiError;
            use crate::http::scope::{Namespaced, NamespacedItem};
            use crate::http::AppState;
            use crate::kube::handlers::{self, Raw, ResourceList};
            use crate::kube::params::{DeleteBody, DeleteParams, ListParams, WriteParams};
            #[allow(unused_imports, reason = "named by the OpenAPI declarations")]
            use crate::kube::params::DeleteOptions;
            #[allow(unused_imports, reason = "named by the OpenAPI declarations")]
            use crate::kube::status::Status;
            #[allow(unused_imports, reason = "named by the OpenAPI declarations")]
            use $schema as KindSchema;

            fn content_type(req: &HttpRequest) -> Option<&str> {
                req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
            }

            /// List (or, with `watch=true`, watch) the namespace's objects.
            #[utoipa::path(tag = $tag, operation_id = $list_op,
                params(("namespace" = String, Path), ListParams),
                responses((status = 200, body = ResourceList)))]
            #[get($collection)]
            async fn list(
                scope: Namespaced,
                caller: Caller,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
            ) -> Result<HttpResponse, ApiError> {
                handlers::list(&$kind, &state, Some(scope.namespace), caller.0, &raw).await
            }

            /// List (or watch) the objects of every namespace the caller may see.
            #[utoipa::path(tag = $tag, operation_id = $list_all_op,
                params(ListParams),
                responses((status = 200, body = ResourceList)))]
            #[get($all)]
            async fn list_all(
                caller: Caller,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
            ) -> Result<HttpResponse, ApiError> {
                handlers::list(&$kind, &state, None, caller.0, &raw).await
            }

            /// Create an object (JSON or YAML). The path's namespace must agree with
            /// `metadata.namespace`.
            #[utoipa::path(tag = $tag, operation_id = $create_op,
                params(("namespace" = String, Path), WriteParams),
                request_body(content((KindSchema = "application/json"), (KindSchema = "application/yaml"))),
                responses((status = 201, body = KindSchema)))]
            #[post($collection)]
            async fn create(
                scope: Namespaced,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: Document,
            ) -> Result<HttpResponse, ApiError> {
                handlers::create(&$kind, &state, &scope.namespace, &raw, body).await
            }

            /// Read an object.
            #[utoipa::path(tag = $tag, operation_id = $read_op,
                params(("namespace" = String, Path), ("name" = String, Path)),
                responses((status = 200, body = KindSchema)))]
            #[get($item)]
            async fn read(item: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
                handlers::read(&$kind, &state, &item.namespace, &item.name).await
            }

            /// Replace an object; with `metadata.resourceVersion`, only over that
            /// version (else 409 Conflict). Immutable fields are refused (422).
            #[utoipa::path(tag = $tag, operation_id = $replace_op,
                params(("namespace" = String, Path), ("name" = String, Path), WriteParams),
                request_body(content((KindSchema = "application/json"), (KindSchema = "application/yaml"))),
                responses((status = 200, body = KindSchema)))]
            #[put($item)]
            async fn replace(
                item: NamespacedItem,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: Document,
            ) -> Result<HttpResponse, ApiError> {
                handlers::replace(&$kind, &state, &item.namespace, &item.name, &raw, body).await
            }

            /// Patch an object: a JSON merge patch, or a strategic merge patch
            /// without directives.
            #[utoipa::path(tag = $tag, operation_id = $patch_op,
                params(("namespace" = String, Path), ("name" = String, Path), WriteParams),
                request_body(content((crate::kube::patch::Patch = "application/merge-patch+json"), (crate::kube::patch::Patch = "application/strategic-merge-patch+json"))),
                responses((status = 200, body = KindSchema)))]
            #[patch($item)]
            async fn merge(
                req: HttpRequest,
                item: NamespacedItem,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: Document,
            ) -> Result<HttpResponse, ApiError> {
                handlers::patch(&$kind, &state, &item.namespace, &item.name, &raw, content_type(&req), body).await
            }

            /// Delete an object: what it runs is stopped, then it is gone; its
            /// dependents (objects whose `metadata.ownerReferences` name it) follow
            /// `propagationPolicy`. Takes a `DeleteOptions` body as well as the query
            /// parameters.
            #[utoipa::path(tag = $tag, operation_id = $delete_op,
                params(("namespace" = String, Path), ("name" = String, Path), DeleteParams),
                request_body(content((Option<DeleteOptions> = "application/json")), description = "Optional `DeleteOptions`"),
                responses((status = 200, description = "A `Status` (Job deleted in the background) or the object being deleted (custom resources, or held by a `foregroundDeletion`/`orphan` finalizer)", body = crate::kube::upstream_schema::DeleteResult)))]
            #[delete($item)]
            async fn remove(
                item: NamespacedItem,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: DeleteBody,
            ) -> Result<HttpResponse, ApiError> {
                handlers::delete(&$kind, &state, &item.namespace, &item.name, &raw, &body.0).await
            }

            /// Read an object through its `status` subresource.
            #[utoipa::path(tag = $tag, operation_id = $read_status_op,
                params(("namespace" = String, Path), ("name" = String, Path)),
                responses((status = 200, body = KindSchema)))]
            #[get($status)]
            async fn read_status(item: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
                handlers::read(&$kind, &state, &item.namespace, &item.name).await
            }

            /// Replace `status` only.
            #[utoipa::path(tag = $tag, operation_id = $replace_status_op,
                params(("namespace" = String, Path), ("name" = String, Path), WriteParams),
                request_body(content((KindSchema = "application/json"), (KindSchema = "application/yaml"))),
                responses((status = 200, body = KindSchema)))]
            #[put($status)]
            async fn replace_status(
                item: NamespacedItem,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: Document,
            ) -> Result<HttpResponse, ApiError> {
                handlers::replace_status(&$kind, &state, &item.namespace, &item.name, &raw, body).await
            }

            /// Patch `status` only.
            #[utoipa::path(tag = $tag, operation_id = $patch_status_op,
                params(("namespace" = String, Path), ("name" = String, Path), WriteParams),
                request_body(content((crate::kube::patch::Patch = "application/merge-patch+json"), (crate::kube::patch::Patch = "application/strategic-merge-patch+json"))),
                responses((status = 200, body = KindSchema)))]
            #[patch($status)]
            async fn patch_status(
                req: HttpRequest,
                item: NamespacedItem,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
                body: Document,
            ) -> Result<HttpResponse, ApiError> {
                handlers::patch_status(&$kind, &state, &item.namespace, &item.name, &raw, content_type(&req), body)
                    .await
            }

            pub fn routes(cfg: &mut crate::http::routing::Routes) {
                cfg.service(list)
                    .service(list_all)
                    .service(create)
                    .service(read)
                    .service(replace)
                    .service(merge)
                    .service(remove)
                    .service(read_status)
                    .service(replace_status)
                    .service(patch_status);
            }
        }
    };
}

/// Declares the paths of a kind Hearth makes and users only read (Katib's Trials and
/// Suggestions): the namespaced list and item, and the all-namespaces list.
// rustfmt re-indents the attribute continuations inside this macro on every run.
#[rustfmt::skip]
macro_rules! read_only_kind_routes {
    (
        $module:ident, $kind:path, $tag:tt, $schema:ty,
        collection: $collection:tt, item: $item:tt, all: $all:tt,
        ops: [$list_op:tt, $read_op:tt, $list_all_op:tt]
    ) => {
        pub mod $module {
            use actix_web::{get, web, HttpResponse};

            use crate::http::auth::Caller;
            use crate::http::errors::ApiError;
            use crate::http::scope::{Namespaced, NamespacedItem};
            use crate::http::AppState;
            use crate::kube::handlers::{self, Raw, ResourceList};
            use crate::kube::params::ListParams;
            #[allow(unused_imports, reason = "named by the OpenAPI declarations")]
            use $schema as KindSchema;

            /// List (or, with `watch=true`, watch) the namespace's objects.
            #[utoipa::path(tag = $tag, operation_id = $list_op,
                params(("namespace" = String, Path), ListParams),
                responses((status = 200, body = ResourceList)))]
            #[get($collection)]
            async fn list(
                scope: Namespaced,
                caller: Caller,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
            ) -> Result<HttpResponse, ApiError> {
                handlers::list(&$kind, &state, Some(scope.namespace), caller.0, &raw).await
            }

            /// List (or watch) the objects of every namespace the caller may see.
            #[utoipa::path(tag = $tag, operation_id = $list_all_op,
                params(ListParams),
                responses((status = 200, body = ResourceList)))]
            #[get($all)]
            async fn list_all(
                caller: Caller,
                state: web::Data<AppState>,
                raw: web::Query<Raw>,
            ) -> Result<HttpResponse, ApiError> {
                handlers::list(&$kind, &state, None, caller.0, &raw).await
            }

            /// Read an object.
            #[utoipa::path(tag = $tag, operation_id = $read_op,
                params(("namespace" = String, Path), ("name" = String, Path)),
                responses((status = 200, body = KindSchema)))]
            #[get($item)]
            async fn read(
                item: NamespacedItem,
                state: web::Data<AppState>,
            ) -> Result<HttpResponse, ApiError> {
                handlers::read(&$kind, &state, &item.namespace, &item.name).await
            }

            pub fn routes(cfg: &mut crate::http::routing::Routes) {
                cfg.service(list).service(list_all).service(read);
            }
        }
    };
}

kind_routes!(
    jobs, crate::kube::kinds::JOB, "jobs", crate::http::jobs::JobDocument,
    collection: "/apis/batch/v1/namespaces/{namespace}/jobs",
    item: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
    status: "/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status",
    all: "/apis/batch/v1/jobs",
    ops: ["listNamespacedJob", "createNamespacedJob", "readNamespacedJob", "replaceNamespacedJob",
          "patchNamespacedJob", "deleteNamespacedJob", "readNamespacedJobStatus",
          "replaceNamespacedJobStatus", "patchNamespacedJobStatus", "listJobForAllNamespaces"]
);

kind_routes!(
    inferenceservices, crate::kube::kinds::INFERENCE_SERVICE, "serving",
    crate::http::inferenceservices::InferenceService,
    collection: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices",
    item: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}",
    status: "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}/status",
    all: "/apis/serving.kserve.io/v1beta1/inferenceservices",
    ops: ["listNamespacedInferenceService", "createNamespacedInferenceService",
          "readNamespacedInferenceService", "replaceNamespacedInferenceService",
          "patchNamespacedInferenceService", "deleteNamespacedInferenceService",
          "readNamespacedInferenceServiceStatus", "replaceNamespacedInferenceServiceStatus",
          "patchNamespacedInferenceServiceStatus", "listInferenceServiceForAllNamespaces"]
);

kind_routes!(
    experiments, crate::kube::kinds::EXPERIMENT, "tuning", crate::http::experiments::Experiment,
    collection: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/experiments",
    item: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/experiments/{name}",
    status: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/experiments/{name}/status",
    all: "/apis/kubeflow.org/v1beta1/experiments",
    ops: ["listNamespacedExperiment", "createNamespacedExperiment", "readNamespacedExperiment",
          "replaceNamespacedExperiment", "patchNamespacedExperiment", "deleteNamespacedExperiment",
          "readNamespacedExperimentStatus", "replaceNamespacedExperimentStatus",
          "patchNamespacedExperimentStatus", "listExperimentForAllNamespaces"]
);

read_only_kind_routes!(
    trials, crate::kube::kinds::TRIAL, "tuning", crate::http::experiments::KatibObject,
    collection: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials",
    item: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials/{name}",
    all: "/apis/kubeflow.org/v1beta1/trials",
    ops: ["listNamespacedTrial", "readNamespacedTrial", "listTrialForAllNamespaces"]
);

read_only_kind_routes!(
    suggestions, crate::kube::kinds::SUGGESTION, "tuning", crate::http::experiments::KatibObject,
    collection: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/suggestions",
    item: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/suggestions/{name}",
    all: "/apis/kubeflow.org/v1beta1/suggestions",
    ops: ["listNamespacedSuggestion", "readNamespacedSuggestion", "listSuggestionForAllNamespaces"]
);

kind_routes!(
    notebooks, crate::kube::kinds::NOTEBOOK, "notebooks", crate::http::notebooks::Notebook,
    collection: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks",
    item: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks/{name}",
    status: "/apis/kubeflow.org/v1/namespaces/{namespace}/notebooks/{name}/status",
    all: "/apis/kubeflow.org/v1/notebooks",
    ops: ["listNamespacedNotebook", "createNamespacedNotebook", "readNamespacedNotebook",
          "replaceNamespacedNotebook", "patchNamespacedNotebook", "deleteNamespacedNotebook",
          "readNamespacedNotebookStatus", "replaceNamespacedNotebookStatus",
          "patchNamespacedNotebookStatus", "listNotebookForAllNamespaces"]
);

kind_routes!(
    notebooks_v1beta1, crate::kube::kinds::NOTEBOOK_V1BETA1, "notebooks", crate::http::notebooks::Notebook,
    collection: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/notebooks",
    item: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/notebooks/{name}",
    status: "/apis/kubeflow.org/v1beta1/namespaces/{namespace}/notebooks/{name}/status",
    all: "/apis/kubeflow.org/v1beta1/notebooks",
    ops: ["listNamespacedNotebookV1beta1", "createNamespacedNotebookV1beta1",
          "readNamespacedNotebookV1beta1", "replaceNamespacedNotebookV1beta1",
          "patchNamespacedNotebookV1beta1", "deleteNamespacedNotebookV1beta1",
          "readNamespacedNotebookV1beta1Status", "replaceNamespacedNotebookV1beta1Status",
          "patchNamespacedNotebookV1beta1Status", "listNotebookV1beta1ForAllNamespaces"]
);

/// Every kind's paths and discovery.
pub fn routes(cfg: &mut crate::http::routing::Routes) {
    super::discovery::routes(cfg);
    super::openapi_v3::routes(cfg);
    jobs::routes(cfg);
    inferenceservices::routes(cfg);
    experiments::routes(cfg);
    trials::routes(cfg);
    suggestions::routes(cfg);
    notebooks::routes(cfg);
    notebooks_v1beta1::routes(cfg);
    super::view_routes::routes(cfg);
}
