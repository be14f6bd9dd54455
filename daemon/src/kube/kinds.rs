//! The kind registry: each kind served at Kubernetes paths is described once, as the
//! API server's registry and discovery describe it, and one set of handlers serves
//! them all. A kind brings its validation and controller through [`Backend`]; a
//! read-only view (pods, nodes, events) would be a `KindDef` with `get`/`list`/`watch`
//! verbs only.

use serde_json::Value;

use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::store::Resource;

/// How a kind answers DELETE, as the API server does for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAnswer {
    /// A `Status` with `status: Success` (built-in kinds such as Jobs, whose store
    /// does not return the deleted object).
    Status,
    /// The object, with `metadata.deletionTimestamp` set (custom resources, whose
    /// store returns the deleted object).
    Object,
}

/// The core code behind a kind: its validation, rules for change and controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Job,
    InferenceService,
    /// Katib `Experiment` ([`crate::tuning`]).
    Experiment,
    /// Katib `Trial` and `Suggestion`: made by the experiment controller, read-only
    /// to users.
    Trial,
    Suggestion,
    /// Kubeflow `Notebook` ([`crate::notebooks`]), served as `v1` and `v1beta1`.
    Notebook,
    /// A read-only kind computed from Hearth's state ([`super::views`]).
    View(super::views::View),
}

/// One kind, as discovery (`APIResource`) and the handlers need it.
#[derive(Debug)]
pub struct KindDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The resource name in paths (`jobs`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// The `kind` column of the store's resource table.
    pub store_kind: &'static str,
    /// Whether `{name}/status` is served.
    pub status_subresource: bool,
    /// Keys of `status` that are the controller's bookkeeping: kept on a status write
    /// and never shown.
    pub hidden_status: &'static [&'static str],
    pub delete_answer: DeleteAnswer,
    pub backend: Backend,
    /// The kind's OpenAPI v3 schema (served by `/openapi/v3`, printed by `kubectl
    /// explain`): for Hearth's kinds, built from the fields it honours
    /// ([`super::schema`]); a view of a Kubernetes kind may give upstream's.
    pub schema: fn(&KindDef) -> Value,
}

const WRITE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

/// `batch/v1` Job.
pub static JOB: KindDef = KindDef {
    group: "batch",
    version: "v1",
    kind: "Job",
    list_kind: "JobList",
    plural: "jobs",
    singular: "job",
    short_names: &[],
    categories: &["all"],
    namespaced: true,
    verbs: WRITE_VERBS,
    store_kind: crate::jobs::spec::KIND,
    status_subresource: true,
    hidden_status: &[],
    delete_answer: DeleteAnswer::Status,
    backend: Backend::Job,
    schema: super::schema::job,
};

/// KServe `serving.kserve.io/v1beta1` InferenceService (a CRD upstream).
pub static INFERENCE_SERVICE: KindDef = KindDef {
    group: "serving.kserve.io",
    version: "v1beta1",
    kind: "InferenceService",
    list_kind: "InferenceServiceList",
    plural: "inferenceservices",
    singular: "inferenceservice",
    short_names: &["isvc"],
    categories: &["all"],
    namespaced: true,
    verbs: WRITE_VERBS,
    store_kind: crate::serving::service::STORE_KIND,
    status_subresource: true,
    hidden_status: &["hearth"],
    delete_answer: DeleteAnswer::Object,
    backend: Backend::InferenceService,
    schema: super::schema::inference_service,
};

const READ_VERBS: &[&str] = &["get", "list", "watch"];

/// Katib `kubeflow.org/v1beta1` Experiment (a CRD upstream).
pub static EXPERIMENT: KindDef = KindDef {
    group: "kubeflow.org",
    version: "v1beta1",
    kind: "Experiment",
    list_kind: "ExperimentList",
    plural: "experiments",
    singular: "experiment",
    short_names: &[],
    categories: &["all", "kubeflow", "katib"],
    namespaced: true,
    verbs: WRITE_VERBS,
    store_kind: crate::tuning::spec::EXPERIMENT_KIND,
    status_subresource: true,
    hidden_status: &[],
    delete_answer: DeleteAnswer::Object,
    backend: Backend::Experiment,
    schema: super::schema::experiment,
};

/// Katib `kubeflow.org/v1beta1` Trial: one assignment's run, made by Hearth.
pub static TRIAL: KindDef = KindDef {
    group: "kubeflow.org",
    version: "v1beta1",
    kind: "Trial",
    list_kind: "TrialList",
    plural: "trials",
    singular: "trial",
    short_names: &[],
    categories: &["all", "kubeflow", "katib"],
    namespaced: true,
    verbs: READ_VERBS,
    store_kind: crate::tuning::spec::TRIAL_KIND,
    status_subresource: false,
    hidden_status: &[crate::tuning::controller::HEARTH_STATUS],
    delete_answer: DeleteAnswer::Object,
    backend: Backend::Trial,
    schema: super::schema::trial,
};

/// Katib `kubeflow.org/v1beta1` Suggestion: an experiment's assignments, made by Hearth.
pub static SUGGESTION: KindDef = KindDef {
    group: "kubeflow.org",
    version: "v1beta1",
    kind: "Suggestion",
    list_kind: "SuggestionList",
    plural: "suggestions",
    singular: "suggestion",
    short_names: &[],
    categories: &["all", "kubeflow", "katib"],
    namespaced: true,
    verbs: READ_VERBS,
    store_kind: crate::tuning::spec::SUGGESTION_KIND,
    status_subresource: false,
    hidden_status: &[],
    delete_answer: DeleteAnswer::Object,
    backend: Backend::Suggestion,
    schema: super::schema::suggestion,
};

/// Kubeflow `kubeflow.org/v1` Notebook (a CRD upstream): a Jupyter server per object.
pub static NOTEBOOK: KindDef = KindDef {
    group: "kubeflow.org",
    version: "v1",
    kind: "Notebook",
    list_kind: "NotebookList",
    plural: "notebooks",
    singular: "notebook",
    short_names: &[],
    categories: &["all", "kubeflow"],
    namespaced: true,
    verbs: WRITE_VERBS,
    store_kind: crate::notebooks::spec::KIND,
    status_subresource: true,
    hidden_status: &[crate::notebooks::controller::HEARTH_STATUS],
    delete_answer: DeleteAnswer::Object,
    backend: Backend::Notebook,
    schema: super::schema::notebook,
};

/// The same Notebooks as `kubeflow.org/v1beta1` (the spec is the same in both
/// versions upstream; the CRD serves both). Not in the `all` category, so `kubectl
/// get all` lists each notebook once.
pub static NOTEBOOK_V1BETA1: KindDef = KindDef {
    version: "v1beta1",
    categories: &["kubeflow"],
    ..NOTEBOOK
};

/// A read-only view's definition: no store kind, no status subresource.
#[allow(
    clippy::too_many_arguments,
    reason = "one line per KindDef field, named at each call"
)]
const fn view(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
    which: super::views::View,
) -> KindDef {
    KindDef {
        group,
        version,
        kind,
        list_kind,
        plural,
        singular,
        short_names,
        categories: &[],
        namespaced,
        verbs: READ_VERBS,
        store_kind: "",
        status_subresource: false,
        hidden_status: &[],
        delete_answer: DeleteAnswer::Status,
        backend: Backend::View(which),
        schema: super::schema::view,
    }
}

/// core/v1 `Namespace`: the caller's namespaces.
pub static NAMESPACE: KindDef = view(
    "",
    "v1",
    "Namespace",
    "NamespaceList",
    "namespaces",
    "namespace",
    &["ns"],
    false,
    super::views::View::Namespace,
);
/// core/v1 `Pod`: every workload.
pub static POD: KindDef = view(
    "",
    "v1",
    "Pod",
    "PodList",
    "pods",
    "pod",
    &["po"],
    true,
    super::views::View::Pod,
);
/// core/v1 `Node`: this host.
pub static NODE: KindDef = view(
    "",
    "v1",
    "Node",
    "NodeList",
    "nodes",
    "node",
    &["no"],
    false,
    super::views::View::Node,
);
/// core/v1 `Event`: the events Hearth recorded about its objects.
pub static EVENT: KindDef = view(
    "",
    "v1",
    "Event",
    "EventList",
    "events",
    "event",
    &["ev"],
    true,
    super::views::View::Event,
);
/// KServe `serving.kserve.io/v1alpha1` `ClusterServingRuntime`: the runtime table.
pub static CLUSTER_SERVING_RUNTIME: KindDef = view(
    "serving.kserve.io",
    "v1alpha1",
    "ClusterServingRuntime",
    "ClusterServingRuntimeList",
    "clusterservingruntimes",
    "clusterservingruntime",
    &[],
    false,
    super::views::View::ClusterServingRuntime,
);

/// Every kind served, in discovery order.
pub static KINDS: &[&KindDef] = &[
    &JOB,
    &INFERENCE_SERVICE,
    &NAMESPACE,
    &POD,
    &NODE,
    &EVENT,
    &CLUSTER_SERVING_RUNTIME,
    &EXPERIMENT,
    &TRIAL,
    &SUGGESTION,
    &NOTEBOOK,
    &NOTEBOOK_V1BETA1,
];

/// The named API groups of the registry (not the core group `""`), each once.
pub fn groups() -> impl Iterator<Item = &'static str> {
    KINDS
        .iter()
        .enumerate()
        .filter(|(i, k)| !k.group.is_empty() && !KINDS[..*i].iter().any(|earlier| earlier.group == k.group))
        .map(|(_, k)| k.group)
}

/// The kind a path's segments (`apis/{group}/{version}/.../{plural}/...`) name.
pub fn for_path(parts: &[&str]) -> Option<&'static KindDef> {
    let (group, version, rest) = match parts {
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        ["api", version, rest @ ..] => ("", *version, rest),
        _ => return None,
    };
    // The last kind named wins: `namespaces/x/pods/y` is about a pod.
    rest.iter().rev().find_map(|p| {
        KINDS
            .iter()
            .copied()
            .find(|k| k.group == group && k.version == version && *p == k.plural)
    })
}

impl KindDef {
    /// `group/version`, or only the version for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The fields beyond `metadata.name` and `metadata.namespace` that a
    /// `fieldSelector` may name for this kind (as the API server's field label
    /// conversions allow them).
    pub fn selectable_fields(&self) -> &'static [&'static str] {
        match self.backend {
            Backend::View(super::views::View::Pod) => &["status.phase", "spec.nodeName"],
            Backend::View(super::views::View::Event) => &[
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.namespace",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "reason",
                "type",
            ],
            Backend::View(
                super::views::View::Namespace
                | super::views::View::Node
                | super::views::View::ClusterServingRuntime,
            )
            | Backend::Job
            | Backend::InferenceService
            | Backend::Experiment
            | Backend::Trial
            | Backend::Suggestion
            | Backend::Notebook => &[],
        }
    }

    fn read_only(&self, method: &str) -> ApiError {
        ApiError::MethodNotAllowed {
            method: method.into(),
            allowed: vec!["GET".into()],
        }
    }

    /// The stored resource as the document clients see (by value: its parsed fields
    /// move into the document).
    pub fn render(&self, resource: Resource) -> Value {
        match self.backend {
            Backend::Job => crate::jobs::render(resource),
            Backend::InferenceService => crate::serving::service::document(resource),
            Backend::Experiment => crate::tuning::render_experiment(resource),
            Backend::Trial => crate::tuning::render_trial(resource),
            Backend::Suggestion => crate::tuning::render_suggestion(resource),
            Backend::Notebook => crate::notebooks::render(resource, &self.api_version()),
            // A view has no stored objects; its documents come from `views`.
            Backend::View(_) => serde_json::json!({}),
        }
    }

    pub async fn create(
        &self,
        state: &AppState,
        namespace: &str,
        document: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        match self.backend {
            Backend::Job => Ok(state.jobs.create(namespace, document, dry_run).await?),
            Backend::InferenceService => Ok(state.serving.create(namespace, document, dry_run).await?),
            Backend::Experiment => Ok(state.tuning.create(namespace, document, dry_run).await?),
            Backend::Notebook => Ok(state
                .notebooks
                .create(namespace, document, dry_run, &self.api_version())
                .await?),
            Backend::Trial | Backend::Suggestion | Backend::View(_) => Err(self.read_only("POST")),
        }
    }

    /// PUT of the whole object; the kind refuses changes to its immutable fields.
    pub async fn replace(
        &self,
        state: &AppState,
        namespace: &str,
        name: &str,
        document: Value,
        expected_version: Option<i64>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        match self.backend {
            Backend::Job => Ok(state
                .jobs
                .replace(namespace, name, document, expected_version, dry_run)
                .await?),
            Backend::InferenceService => Ok(state
                .serving
                .replace(namespace, name, document, expected_version, dry_run)
                .await?),
            Backend::Experiment => Ok(state
                .tuning
                .replace(namespace, name, document, expected_version, dry_run)
                .await?),
            Backend::Notebook => Ok(state
                .notebooks
                .replace(
                    namespace,
                    name,
                    document,
                    expected_version,
                    dry_run,
                    &self.api_version(),
                )
                .await?),
            Backend::Trial | Backend::Suggestion | Backend::View(_) => Err(self.read_only("PUT")),
        }
    }

    /// Starts deletion (the controller stops what runs and removes the object);
    /// answers the object as marked.
    pub async fn delete(
        &self,
        state: &AppState,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        match self.backend {
            Backend::Job => Ok(state.jobs.delete(namespace, name, dry_run).await?),
            Backend::InferenceService => Ok(state.serving.delete(namespace, name, dry_run).await?),
            Backend::Experiment => Ok(state.tuning.delete(namespace, name, dry_run).await?),
            Backend::Notebook => Ok(state
                .notebooks
                .delete(namespace, name, dry_run, &self.api_version())
                .await?),
            // Reached only from the garbage collector: these kinds have no DELETE path.
            Backend::Trial | Backend::Suggestion => Ok(state
                .tuning
                .finish_collected(self.store_kind, namespace, name, dry_run)
                .await?),
            Backend::View(_) => Err(self.read_only("DELETE")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_the_objects_of_every_served_kind() {
        for kind in KINDS.iter().filter(|k| !matches!(k.backend, Backend::View(_))) {
            assert!(
                crate::store::resources::WATCHED_KINDS.contains(&kind.store_kind),
                "{} is served but its changes would carry no object",
                kind.kind
            );
        }
        assert_eq!(
            groups().collect::<Vec<_>>(),
            ["batch", "serving.kserve.io", "kubeflow.org"]
        );
        let parts = ["apis", "batch", "v1", "namespaces", "a", "jobs", "x"];
        assert_eq!(for_path(&parts).map(|k| k.kind), Some("Job"));
        let parts = ["api", "v1", "namespaces", "a", "pods", "x", "log"];
        assert_eq!(for_path(&parts).map(|k| k.kind), Some("Pod"));
        assert_eq!(
            for_path(&["api", "v1", "namespaces", "a"]).map(|k| k.kind),
            Some("Namespace")
        );
    }
}
