//! Each served kind's OpenAPI v3 schema (the shape `kubectl explain` prints and the
//! `/openapi/v3` documents carry), built from what Hearth honours: the properties of
//! an object are exactly the field list its validator accepts (`jobs::spec::JOB_FIELDS`,
//! `serving::isvc::COMPONENT_KNOWN`, ...), each with its type as upstream declares it
//! (Kubernetes' `k8s.io/api` types, KServe's CRD) and Hearth's own description of
//! what it does with it. A field Hearth refuses is absent, so the schema never
//! advertises it; the server refuses it by name (`Invalid` naming the field).
//!
//! Schemas are OpenAPI 3.0 schema objects as `serde_json::Value`, named as the
//! Kubernetes API server names them (`io.k8s.api.batch.v1.Job`) or, for custom
//! resources, by reversed group (`io.kserve.serving.v1beta1.InferenceService`).

use serde_json::{json, Map, Value};

use super::kinds::KindDef;

/// A property: its name, then its schema.
type Prop = (&'static str, Value);

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn enumerated(description: &str, values: &[&str]) -> Value {
    json!({"type": "string", "description": description, "enum": values})
}

fn int32(description: &str) -> Value {
    json!({"type": "integer", "format": "int32", "description": description})
}

fn int64(description: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": description})
}

fn boolean(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn strings(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "description": description})
}

fn string_map(description: &str) -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}, "description": description})
}

/// A free-form object whose keys Hearth checks itself (status, policies' rules).
fn free_object(description: &str) -> Value {
    json!({"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true})
}

fn array_of(description: &str, items: Value) -> Value {
    json!({"type": "array", "items": items, "description": description})
}

/// An object with exactly `props`, in the order `names` lists them; a name of `names`
/// without a declared property is a programming error caught by this module's tests
/// (it is left out rather than typed wrongly).
fn object(description: &str, names: &[&str], props: Vec<Prop>) -> Value {
    let mut properties = Map::new();
    for name in names {
        if let Some((_, schema)) = props.iter().find(|(n, _)| n == name) {
            properties.insert((*name).to_string(), schema.clone());
        }
    }
    json!({"type": "object", "description": description, "properties": properties})
}

/// Kubernetes' `resource.Quantity` in a map, as CRDs declare it.
fn quantities(description: &str) -> Value {
    json!({
        "type": "object",
        "description": description,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
        },
    })
}

fn resources(description: &str) -> Value {
    object(
        description,
        &["limits", "requests"],
        vec![
            (
                "limits",
                quantities("The most the workload may use: `cpu`, `memory`, `nvidia.com/gpu` (whole GPUs, placed by Hearth's GPU inventory)."),
            ),
            (
                "requests",
                quantities("What the workload is admitted with (`cpu`, `memory`, `nvidia.com/gpu`); Hearth's queue admits work while the host has it free."),
            ),
        ],
    )
}

fn env(description: &str) -> Value {
    array_of(
        description,
        object(
            "One environment variable (values only: `valueFrom` needs ConfigMaps and Secrets, which Hearth does not have).",
            &["name", "value"],
            vec![
                ("name", string("The variable's name.")),
                ("value", string("Its value; `$(VAR)` references are expanded as Kubernetes does.")),
            ],
        ),
    )
}

fn ports(description: &str) -> Value {
    array_of(
        description,
        object(
            "A port the container listens on.",
            &["containerPort", "name", "protocol"],
            vec![
                ("containerPort", int32("The port number (1-65535).")),
                ("name", string("An IANA service name for the port.")),
                (
                    "protocol",
                    enumerated("TCP (the default), UDP or SCTP.", &["SCTP", "TCP", "UDP"]),
                ),
            ],
        ),
    )
}

/// `metadata` as Hearth keeps it (`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`,
/// the fields a client writes or reads back).
fn object_meta() -> Value {
    let names = [
        "name",
        "generateName",
        "namespace",
        "labels",
        "annotations",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "ownerReferences",
        "finalizers",
    ];
    object(
        "Standard object metadata; Hearth sets uid, resourceVersion (one store-wide counter), generation and the timestamps.",
        &names,
        vec![
            ("name", string("The object's name, unique in its namespace (a DNS-1123 label for workloads).")),
            ("generateName", string("A prefix from which Hearth makes a unique name when name is empty.")),
            ("namespace", string("The namespace; it must agree with the path's.")),
            ("labels", string_map("Labels, selectable with labelSelector.")),
            ("annotations", string_map("Annotations; Hearth reads some of KServe's (serving.kserve.io/*).")),
            ("uid", string("Set by Hearth at creation.")),
            ("resourceVersion", string("The store-wide version of the last change; a stale one in a replace is a Conflict.")),
            ("generation", int64("Counts changes of spec.")),
            ("creationTimestamp", json!({"type": "string", "format": "date-time", "description": "When the object was created (RFC 3339)."})),
            ("deletionTimestamp", json!({"type": "string", "format": "date-time", "description": "When deletion began (RFC 3339)."})),
            ("ownerReferences", array_of("Objects this one belongs to (of a kind Hearth stores, in this namespace): once none of them is left, the garbage collector deletes this one.", owner_reference())),
            ("finalizers", strings("Set by Hearth only: foregroundDeletion or orphan, from a delete's propagationPolicy, while it propagates.")),
        ],
    )
}

/// `io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference`.
fn owner_reference() -> Value {
    let names = [
        "apiVersion",
        "kind",
        "name",
        "uid",
        "controller",
        "blockOwnerDeletion",
    ];
    let mut schema = object(
        "An owner of this object (meta/v1 OwnerReference).",
        &names,
        vec![
            (
                "apiVersion",
                string("The owner's API version (batch/v1, serving.kserve.io/v1beta1)."),
            ),
            ("kind", string("The owner's kind (Job, InferenceService).")),
            ("name", string("The owner's name, in this object's namespace.")),
            (
                "uid",
                string("The owner's metadata.uid; an owner is matched by it."),
            ),
            (
                "controller",
                boolean("Whether the owner is this object's managing controller (at most one)."),
            ),
            (
                "blockOwnerDeletion",
                boolean("Whether a foreground deletion of the owner waits for this object to be gone."),
            ),
        ],
    );
    schema["required"] = json!(["apiVersion", "kind", "name", "uid"]);
    schema
}

/// Top-level document of a kind: apiVersion, kind, metadata, spec, status.
fn document(kind: &KindDef, description: &str, spec: Value, status: &str) -> Value {
    let mut schema = object(
        description,
        &["apiVersion", "kind", "metadata", "spec", "status"],
        vec![
            (
                "apiVersion",
                string(&format!("{} (the only version served).", kind.api_version())),
            ),
            ("kind", string(&format!("{}.", kind.kind))),
            ("metadata", object_meta()),
            ("spec", spec),
            ("status", free_object(status)),
        ],
    );
    schema["x-kubernetes-group-version-kind"] =
        json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
    schema
}

/// A batch/v1 container as the process runtime runs it.
fn job_container() -> Value {
    object(
        "The attempt's one process (Hearth's process runtime runs command and args on the host, as the namespace's Unix user).",
        crate::jobs::spec::CONTAINER_FIELDS,
        vec![
            ("name", string("The container's name (a DNS-1123 label).")),
            ("image", string("Recorded and shown; the process runtime runs the command on the host, not in this image.")),
            ("command", strings("The program and its arguments (required: the process runtime knows no image entrypoint).")),
            ("args", strings("Arguments appended to command.")),
            ("env", env("Environment variables of the process; Hearth adds JOB_COMPLETION_INDEX for Indexed Jobs.")),
            ("workingDir", string("The process's working directory on the host.")),
            ("resources", resources("CPU, memory and nvidia.com/gpu the attempt is queued for; GPUs are assigned by index through CUDA_VISIBLE_DEVICES.")),
            ("imagePullPolicy", enumerated("Accepted; nothing is pulled.", &["Always", "IfNotPresent", "Never"])),
            ("ports", ports("Recorded; the process shares the host's network.")),
            ("terminationMessagePolicy", enumerated("File (the default) or FallbackToLogsOnError: where the attempt's termination message comes from.", &["FallbackToLogsOnError", "File"])),
            ("terminationMessagePath", string("The file whose content becomes the termination message.")),
            ("securityContext", free_object("Honoured within the namespace's Unix identities (runAsUser and runAsGroup must be the namespace's).")),
        ],
    )
}

fn pod_template() -> Value {
    let pod_spec = object(
        "What each attempt runs: exactly one container.",
        crate::jobs::spec::POD_FIELDS,
        vec![
            ("containers", array_of("Exactly one container, run as a host process.", job_container())),
            ("restartPolicy", enumerated("Never (a failed attempt is a new attempt) or OnFailure (restarted in place); Always is not allowed for Jobs.", &["Never", "OnFailure"])),
            ("terminationGracePeriodSeconds", int64("Seconds between SIGTERM and SIGKILL when an attempt is stopped.")),
            ("activeDeadlineSeconds", int64("Seconds an attempt may run before it is stopped and fails with DeadlineExceeded.")),
            ("tolerations", array_of("Accepted; one host has no taints to tolerate.", free_object("A toleration."))),
            ("securityContext", free_object("Honoured within the namespace's Unix identities (runAsUser, runAsGroup, fsGroup must be the namespace's).")),
        ],
    );
    object(
        "The pod template each attempt is made from.",
        &["metadata", "spec"],
        vec![
            (
                "metadata",
                object(
                    "Labels and annotations given to each attempt's Pod view.",
                    &["labels", "annotations"],
                    vec![
                        ("labels", string_map("Labels of the attempts.")),
                        ("annotations", string_map("Annotations of the attempts.")),
                    ],
                ),
            ),
            ("spec", pod_spec),
        ],
    )
}

/// `io.k8s.api.batch.v1.Job` as Hearth honours it.
pub fn job(kind: &KindDef) -> Value {
    let spec = object(
        "What the Job runs and when it is done or failed (batch/v1 JobSpec; fields Hearth does not honour are refused by name).",
        crate::jobs::spec::JOB_FIELDS,
        vec![
            ("template", pod_template()),
            ("backoffLimit", int32("Failed attempts before the Job fails (default 6, at most 2147483647).")),
            ("activeDeadlineSeconds", int64("Seconds from status.startTime before the Job is stopped and fails with DeadlineExceeded.")),
            ("ttlSecondsAfterFinished", int32("Seconds after the Job finishes before Hearth deletes it.")),
            ("completions", int32("Successful attempts needed (default 1, at most 100000).")),
            ("parallelism", int32("Attempts run at once, at most (default 1, at most 100000; Hearth's queue may run fewer).")),
            ("completionMode", enumerated("NonIndexed (the default) or Indexed (each index 0..completions must succeed once; JOB_COMPLETION_INDEX is set).", &["Indexed", "NonIndexed"])),
            ("suspend", boolean("While true no attempt starts and running ones are stopped.")),
            ("podFailurePolicy", free_object("Rules on exit codes and pod conditions (FailJob, FailIndex, Ignore, Count), at most 20.")),
            ("backoffLimitPerIndex", int32("Failed attempts allowed per index of an Indexed Job.")),
            ("maxFailedIndexes", int32("Failed indexes before an Indexed Job fails (at most completions).")),
            ("successPolicy", free_object("Rules (succeededIndexes, succeededCount) that end an Indexed Job early as succeeded, at most 20.")),
            ("podReplacementPolicy", enumerated("Only Failed: a new attempt starts once the previous one has ended.", &["Failed"])),
            ("managedBy", enumerated("Only kubernetes.io/job-controller (Hearth's controller).", &["kubernetes.io/job-controller"])),
        ],
    );
    document(
        kind,
        "A batch/v1 Job, run by Hearth's queue on this host: each attempt is one process.",
        spec,
        "The Job's progress in the batch/v1 JobStatus shape (conditions, startTime, completionTime, active, succeeded, failed, ready, completedIndexes, failedIndexes).",
    )
}

fn model_format() -> Value {
    object(
        "The model's format, which chooses the serving runtime.",
        &["name", "version"],
        vec![
            ("name", string("The format (sklearn, xgboost, lightgbm, onnx, tensorflow, pytorch, triton, huggingface, ...), matched against the configured serving runtimes.")),
            ("version", string("The format's version, matched against the runtimes' supported versions.")),
        ],
    )
}

/// Fields of [`crate::serving::isvc::MODEL_FIELDS`] that KServe's framework specs
/// (`predictor.sklearn`, ...) lack: the framework names the format, and a runtime is
/// chosen by it. Hearth's validator takes them there too; the schema keeps to upstream.
const NOT_IN_FRAMEWORK_SPECS: &[&str] = &["modelFormat", "runtime"];

/// The fields of a model spec: all of `MODEL_FIELDS` for `model`, upstream's subset for
/// a framework.
fn model_fields(framework: bool) -> Vec<&'static str> {
    crate::serving::isvc::MODEL_FIELDS
        .iter()
        .copied()
        .filter(|f| !framework || !NOT_IN_FRAMEWORK_SPECS.contains(f))
        .collect()
}

fn model_spec(description: &str, framework: bool) -> Value {
    object(
        description,
        &model_fields(framework),
        vec![
            ("modelFormat", model_format()),
            ("storageUri", string("Where the model is: an absolute path, file://, http(s)://, s3:// or public gs://; fetched once into Hearth's model cache.")),
            ("protocolVersion", enumerated("v1 or v2 (the open inference protocol); the runtime's default otherwise.", &["grpc-v1", "grpc-v2", "v1", "v2"])),
            ("runtime", string("A serving runtime by name; chosen by modelFormat otherwise.")),
            ("runtimeVersion", string("The runtime's version.")),
            ("resources", resources("CPU, memory and nvidia.com/gpu each replica is placed with.")),
            ("args", strings("Extra arguments to the runtime's server.")),
            ("env", env("Extra environment variables of the runtime's server.")),
            ("ports", ports("Refused for model runtimes (Hearth chooses the port); only for custom containers.")),
            ("name", string("The container's name.")),
            ("image", string("Recorded; the process runtime runs the configured runtime's command, not this image.")),
            ("imagePullPolicy", enumerated("Accepted; nothing is pulled.", &["Always", "IfNotPresent", "Never"])),
        ],
    )
}

/// Fields of [`crate::serving::isvc::CUSTOM_CONTAINER_FIELDS`] that are not in
/// Kubernetes' `Container`, which KServe's CRD uses for `containers`: Hearth's validator
/// takes `storageUri` there, but the schema keeps to upstream.
const NOT_IN_CONTAINERS: &[&str] = &["storageUri"];

fn custom_container_fields() -> Vec<&'static str> {
    crate::serving::isvc::CUSTOM_CONTAINER_FIELDS
        .iter()
        .copied()
        .filter(|f| !NOT_IN_CONTAINERS.contains(f))
        .collect()
}

fn custom_container() -> Value {
    object(
        "A custom server, run as a host process that must listen on its port.",
        &custom_container_fields(),
        vec![
            ("name", string("The container's name.")),
            ("image", string("Recorded; the command runs on the host.")),
            ("imagePullPolicy", enumerated("Accepted; nothing is pulled.", &["Always", "IfNotPresent", "Never"])),
            ("command", strings("The server's program and arguments (required: the process runtime knows no image entrypoint).")),
            ("args", strings("Arguments appended to command.")),
            ("env", env("Environment variables of the server.")),
            ("ports", ports("The port the server listens on (the first is used).")),
            ("resources", resources("CPU, memory and nvidia.com/gpu each replica is placed with.")),
            ("workingDir", string("The server's working directory on the host.")),
        ],
    )
}

/// Fields of [`crate::serving::isvc::COMPONENT_KNOWN`] that KServe's transformer spec
/// lacks (a transformer is a custom container; models are the predictor's).
fn not_in_transformer(field: &str) -> bool {
    field == "model" || crate::serving::isvc::FRAMEWORKS.contains(&field)
}

fn component_fields(transformer: bool) -> Vec<&'static str> {
    crate::serving::isvc::COMPONENT_KNOWN
        .iter()
        .copied()
        .filter(|f| !transformer || !not_in_transformer(f))
        .collect()
}

fn component(description: &str, transformer: bool) -> Value {
    let mut props: Vec<Prop> = vec![
        ("model", model_spec("The model to serve, by format and storage URI (KServe's ModelSpec).", false)),
        ("containers", array_of("One custom container, instead of model.", custom_container())),
        ("minReplicas", int32("Fewest replicas; 0 lets the service scale to zero when idle.")),
        ("maxReplicas", int32("Most replicas Hearth's autoscaler starts.")),
        ("scaleTarget", int32("The per-replica value of scaleMetric the autoscaler aims at.")),
        ("scaleMetric", enumerated("concurrency (in-flight requests) or rps.", &["concurrency", "cpu", "memory", "rps"])),
        ("containerConcurrency", int64("Requests one replica takes at once; more wait in Hearth's router.")),
        ("timeout", int64("Seconds a request may take before the router answers 504.")),
        ("canaryTrafficPercent", int64("The share of traffic (0-100) the latest revision gets; the rest goes to the previous ready revision.")),
    ];
    for framework in crate::serving::isvc::FRAMEWORKS {
        props.push((
            framework,
            model_spec(
                "The pre-model form: read as model with modelFormat.name set to this framework, as KServe does.",
                true,
            ),
        ));
    }
    object(description, &component_fields(transformer), props)
}

/// `io.kserve.serving.v1beta1.InferenceService` as Hearth honours it.
pub fn inference_service(kind: &KindDef) -> Value {
    let spec = object(
        "The predictor and optional transformer (KServe InferenceServiceSpec; explainers and other fields are refused by name).",
        crate::serving::isvc::SPEC_FIELDS,
        vec![
            ("predictor", component("The model server: replicas behind Hearth's router, autoscaled on concurrency or rps.", false)),
            ("transformer", component("Pre- and post-processing in front of the predictor (a custom container).", true)),
        ],
    );
    document(
        kind,
        "A KServe InferenceService, served by Hearth's own router and replicas on this host.",
        spec,
        "KServe's InferenceServiceStatus: url, address, conditions (Ready, PredictorReady, ...), components with their revisions and traffic, modelStatus.",
    )
}

fn name_value(description: &str) -> Value {
    array_of(
        description,
        object(
            "A name and its value.",
            &["name", "value"],
            vec![("name", string("The name.")), ("value", string("The value."))],
        ),
    )
}

/// Katib's `ParameterSpec`s, as [`crate::tuning::spec`] takes them.
fn katib_parameters() -> Value {
    use crate::tuning::spec::{FEASIBLE_SPACE_FIELDS, PARAMETER_FIELDS};
    let space = object(
        "The values the parameter may take.",
        FEASIBLE_SPACE_FIELDS,
        vec![
            ("min", string("The least value (double and int), as a string.")),
            ("max", string("The greatest value (double and int), as a string.")),
            (
                "step",
                string("The spacing of values (required for double with grid), as a string."),
            ),
            (
                "list",
                strings("The values of a discrete or categorical parameter."),
            ),
            (
                "distribution",
                enumerated(
                    "How random values are drawn (default uniform).",
                    &["uniform", "logUniform", "normal", "logNormal"],
                ),
            ),
        ],
    );
    array_of(
        "The search space: one entry per hyperparameter.",
        object(
            "A hyperparameter.",
            PARAMETER_FIELDS,
            vec![
                (
                    "name",
                    string("The parameter's name, referenced by trialParameters."),
                ),
                (
                    "parameterType",
                    enumerated("Its type.", &["double", "int", "discrete", "categorical"]),
                ),
                ("feasibleSpace", space),
            ],
        ),
    )
}

fn katib_objective() -> Value {
    object(
        "What the experiment optimizes (Katib's ObjectiveSpec).",
        crate::tuning::spec::OBJECTIVE_FIELDS,
        vec![
            ("type", enumerated("minimize or maximize.", &["maximize", "minimize"])),
            ("goal", json!({"type": "number", "format": "double", "description": "The objective value that ends the experiment (ExperimentGoalReached)."})),
            ("objectiveMetricName", string("The metric optimized.")),
            ("additionalMetricNames", strings("Further metrics collected.")),
            ("metricStrategies", name_value("Per metric, which value counts: min, max or latest (default: the objective's direction).")),
        ],
    )
}

/// `org.kubeflow.v1beta1.Experiment` as Hearth honours it.
pub fn experiment(kind: &KindDef) -> Value {
    use crate::tuning::spec;
    let trial_template = object(
        "How each trial runs: a batch/v1 Job with ${trialParameters.x} placeholders.",
        spec::TRIAL_TEMPLATE_FIELDS,
        vec![
            (
                "retain",
                boolean("Keep each trial's Job once it ends (default false: removed, as Katib does)."),
            ),
            (
                "trialSpec",
                free_object("The batch/v1 Job each trial runs (other kinds are refused by name)."),
            ),
            (
                "trialParameters",
                array_of(
                    "Placeholders of trialSpec and what fills them.",
                    object(
                        "A trial parameter.",
                        spec::TRIAL_PARAMETER_FIELDS,
                        vec![
                            ("name", string("Used as ${trialParameters.<name>} in trialSpec.")),
                            ("description", string("Free text.")),
                            (
                                "reference",
                                string(
                                    "A parameter's name, or a ${trialSpec.Name}-style metadata reference.",
                                ),
                            ),
                        ],
                    ),
                ),
            ),
            (
                "primaryContainerName",
                string("The container whose output the StdOut collector reads."),
            ),
        ],
    );
    let collector = object(
        "How metrics are collected (StdOut, the default, or File).",
        spec::COLLECTOR_SPEC_FIELDS,
        vec![
            (
                "source",
                object(
                    "Where metrics are read.",
                    &["fileSystemPath", "filter"],
                    vec![
                        (
                            "fileSystemPath",
                            object(
                                "The File collector's file.",
                                &["path", "kind", "format"],
                                vec![
                                    ("path", string("An absolute path.")),
                                    ("kind", enumerated("File.", &["File", "Directory"])),
                                    (
                                        "format",
                                        enumerated(
                                            "TEXT (matched by metricsFormat) or JSON (one object per line).",
                                            &["TEXT", "JSON"],
                                        ),
                                    ),
                                ],
                            ),
                        ),
                        (
                            "filter",
                            object(
                                "Regular expressions with two groups, name and value.",
                                &["metricsFormat"],
                                vec![("metricsFormat", strings("Default: Katib's name=value filter."))],
                            ),
                        ),
                    ],
                ),
            ),
            (
                "collector",
                object(
                    "The collector.",
                    &["kind"],
                    vec![(
                        "kind",
                        string("StdOut, File or Push (other kinds are refused by name)."),
                    )],
                ),
            ),
        ],
    );
    let spec_schema = object(
        "A Katib ExperimentSpec (fields Hearth does not honour are refused by name).",
        spec::SPEC_FIELDS,
        vec![
            ("parameters", katib_parameters()),
            ("objective", katib_objective()),
            (
                "algorithm",
                object(
                    "The search algorithm.",
                    spec::ALGORITHM_FIELDS,
                    vec![
                        (
                            "algorithmName",
                            string(
                                "random, grid, tpe, multivariate-tpe, sobol, cmaes, bayesianoptimization or \
                                 hyperband (enas, darts and pbt are refused by name).",
                            ),
                        ),
                        (
                            "algorithmSettings",
                            name_value(
                                "Algorithm settings, with Katib's names and defaults (random_state, ...).",
                            ),
                        ),
                    ],
                ),
            ),
            ("trialTemplate", trial_template),
            (
                "parallelTrialCount",
                int32("Trials run at once, at most (default 3)."),
            ),
            ("maxTrialCount", int32("Trials run in all, at most.")),
            (
                "maxFailedTrialCount",
                int32("Failed trials beyond which the experiment fails."),
            ),
            ("metricsCollectorSpec", collector),
            (
                "earlyStopping",
                object(
                    "Early stopping (Katib's medianstop).",
                    spec::EARLY_STOPPING_FIELDS,
                    vec![
                        ("algorithmName", string("medianstop.")),
                        (
                            "algorithmSettings",
                            name_value("min_trials_required (default 3) and start_step (default 4)."),
                        ),
                    ],
                ),
            ),
            (
                "resumePolicy",
                enumerated(
                    "Never (the default) or LongRunning.",
                    &["FromVolume", "LongRunning", "Never"],
                ),
            ),
        ],
    );
    document(
        kind,
        "A Katib hyperparameter-tuning Experiment, run by Hearth's own controller and algorithms.",
        spec_schema,
        "Katib's ExperimentStatus: conditions, trial counts and lists, currentOptimalTrial.",
    )
}

/// `org.kubeflow.v1beta1.Trial`: made by Hearth, read-only.
pub fn trial(kind: &KindDef) -> Value {
    document(
        kind,
        "A Katib Trial: one assignment of an Experiment, run as a batch/v1 Job (read-only).",
        free_object("Katib's TrialSpec: objective, parameterAssignments, runSpec, metricsCollector, primaryContainerName."),
        "Katib's TrialStatus: conditions, startTime, completionTime, observation.",
    )
}

/// `org.kubeflow.v1beta1.Suggestion`: made by Hearth, read-only.
pub fn suggestion(kind: &KindDef) -> Value {
    document(
        kind,
        "A Katib Suggestion: the assignments made for an Experiment (read-only).",
        free_object("Katib's SuggestionSpec: algorithm, requests, resumePolicy."),
        "Katib's SuggestionStatus: suggestionCount, suggestions, conditions.",
    )
}

/// `org.kubeflow.v1.Notebook` (and `v1beta1`) as Hearth honours it: the pod template
/// of Kubeflow's CRD, cut to what process mode runs (`crate::notebooks::spec`).
pub fn notebook(kind: &KindDef) -> Value {
    use crate::notebooks::spec;
    let container = object(
        "The notebook server (process mode runs the Jupyter server of [notebooks] command, as the namespace's Unix user).",
        spec::CONTAINER_FIELDS,
        vec![
            ("name", string("The container's name.")),
            ("image", string("Recorded and shown; the process runtime runs Jupyter from the host, not this image.")),
            ("imagePullPolicy", enumerated("Accepted; nothing is pulled.", &["Always", "IfNotPresent", "Never"])),
            ("env", env("The server's environment; NB_PREFIX (/notebook/{namespace}/{name}) is set first, as Kubeflow does.")),
            ("resources", resources("CPU, memory and nvidia.com/gpu the server is queued for (notebook priority); GPUs are assigned through CUDA_VISIBLE_DEVICES.")),
            (
                "volumeMounts",
                array_of(
                    "Where volumes go: one persistentVolumeClaim becomes the server's root dir; a memory emptyDir only at /dev/shm.",
                    object(
                        "A volume mount.",
                        spec::VOLUME_MOUNT_FIELDS,
                        vec![
                            ("name", string("One of spec.template.spec.volumes.")),
                            ("mountPath", string("Where the pod would mount it (/home/jovyan for the workspace).")),
                            ("readOnly", boolean("Must be false for the workspace.")),
                        ],
                    ),
                ),
            ),
            ("ports", ports("Recorded; the server listens on a loopback port Hearth chooses, behind its proxy.")),
            ("securityContext", free_object("Honoured within the namespace's Unix identities (runAsUser and runAsGroup must be the namespace's).")),
            ("terminationMessagePolicy", enumerated("Accepted.", &["FallbackToLogsOnError", "File"])),
            ("terminationMessagePath", string("Accepted.")),
        ],
    );
    let volume = object(
        "A volume: a persistentVolumeClaim (the workspace directory <data-dir>/workspaces/<namespace>/<claimName>, kept when the notebook goes) or a memory-backed emptyDir (/dev/shm).",
        spec::VOLUME_FIELDS,
        vec![
            ("name", string("The volume's name, as volumeMounts name it.")),
            (
                "persistentVolumeClaim",
                object(
                    "A workspace directory of that name in the namespace.",
                    &["claimName", "readOnly"],
                    vec![
                        ("claimName", string("The directory's name (a DNS-1123 subdomain).")),
                        ("readOnly", boolean("Must be false.")),
                    ],
                ),
            ),
            (
                "emptyDir",
                object(
                    "Only medium: Memory, mounted at /dev/shm (the host's).",
                    &["medium", "sizeLimit"],
                    vec![
                        ("medium", string("Memory.")),
                        ("sizeLimit", json!({"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true, "description": "Accepted; the host's /dev/shm has its own size."})),
                    ],
                ),
            ),
        ],
    );
    let pod_spec = object(
        "The notebook's pod: exactly one container.",
        spec::POD_FIELDS,
        vec![
            ("containers", array_of("Exactly one container: the notebook server.", container)),
            ("volumes", array_of("The workspace (persistentVolumeClaim) and shm (emptyDir, Memory).", volume)),
            ("serviceAccountName", string("Accepted (Kubeflow's default-editor); the server runs as the namespace's own user.")),
            ("tolerations", array_of("Accepted; one host has no taints to tolerate.", free_object("A toleration."))),
            ("securityContext", free_object("Honoured within the namespace's Unix identities (runAsUser, runAsGroup, fsGroup must be the namespace's).")),
            ("terminationGracePeriodSeconds", int64("Seconds between SIGTERM and SIGKILL when the server is stopped (default 30, at most 3600).")),
        ],
    );
    let template = object(
        "The pod template of the notebook server.",
        spec::TEMPLATE_FIELDS,
        vec![("spec", pod_spec)],
    );
    document(
        kind,
        "A Kubeflow Notebook: one Jupyter server, reached through Hearth's proxy at /notebook/{namespace}/{name}/. Stopped and started by the kubeflow-resource-stopped annotation; culled when idle.",
        object(
            "Kubeflow's NotebookSpec.",
            spec::SPEC_FIELDS,
            vec![("template", template)],
        ),
        "Kubeflow's NotebookStatus: readyReplicas (0 or 1), containerState (running, waiting with a reason) and conditions.",
    )
}

/// A read-only view (Pod, Node, Namespace, Event, ClusterServingRuntime): Hearth
/// computes these from its own state and takes no writes, so the schema names the
/// object's shape and leaves `spec` and `status` to the Kubernetes (or KServe) type of
/// the same name.
pub fn view(kind: &KindDef) -> Value {
    document(
        kind,
        &format!(
            "A read-only {} computed from Hearth's state (get, list and watch only).",
            kind.kind
        ),
        free_object(&format!("As in the upstream {} type.", kind.kind)),
        &format!("As in the upstream {} type.", kind.kind),
    )
}

/// The schema's name in `components.schemas`: `io.k8s.api.{group}.{version}.{Kind}` for
/// Kubernetes' groups, the reversed group for others (as the API server names CRDs).
pub fn schema_name(kind: &KindDef) -> String {
    name_for(kind.group, kind.version, kind.kind)
}

/// Kubernetes' own groups: the core group (`""`) is `core`, `batch` stays, and
/// `authentication.k8s.io` is `authentication`; any other group is reversed.
fn name_for(group: &str, version: &str, kind: &str) -> String {
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}.{kind}");
    }
    if let Some(short) = group.strip_suffix(".k8s.io") {
        return format!("io.k8s.api.{short}.{version}.{kind}");
    }
    let mut parts: Vec<&str> = group.split('.').collect();
    if parts.len() == 1 {
        return format!("io.k8s.api.{group}.{version}.{kind}");
    }
    parts.reverse();
    format!("{}.{version}.{kind}", parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::kinds::{EXPERIMENT, INFERENCE_SERVICE, JOB, KINDS};

    /// Every honoured field has a declared type: no name of a field list is dropped.
    fn assert_properties(schema: &Value, path: &str, names: &[&str]) {
        let mut at = schema;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            at = if part == "[]" {
                &at["items"]
            } else {
                &at["properties"][part]
            };
        }
        let keys: std::collections::BTreeSet<&str> = at["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{path} has no properties"))
            .keys()
            .map(String::as_str)
            .collect();
        let names: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(keys, names, "{path}");
    }

    #[test]
    fn every_field_hearth_honours_is_typed_and_no_other() {
        let job = job(&JOB);
        assert_properties(&job, "spec", crate::jobs::spec::JOB_FIELDS);
        assert_properties(&job, "spec.template.spec", crate::jobs::spec::POD_FIELDS);
        assert_properties(
            &job,
            "spec.template.spec.containers.[]",
            crate::jobs::spec::CONTAINER_FIELDS,
        );
        let experiment = experiment(&EXPERIMENT);
        assert_properties(&experiment, "spec", crate::tuning::spec::SPEC_FIELDS);
        assert_properties(
            &experiment,
            "spec.objective",
            crate::tuning::spec::OBJECTIVE_FIELDS,
        );
        assert_properties(
            &experiment,
            "spec.parameters.[]",
            crate::tuning::spec::PARAMETER_FIELDS,
        );
        assert_properties(
            &experiment,
            "spec.parameters.[].feasibleSpace",
            crate::tuning::spec::FEASIBLE_SPACE_FIELDS,
        );
        assert_properties(
            &experiment,
            "spec.trialTemplate",
            crate::tuning::spec::TRIAL_TEMPLATE_FIELDS,
        );
        let isvc = inference_service(&INFERENCE_SERVICE);
        assert_properties(&isvc, "spec", crate::serving::isvc::SPEC_FIELDS);
        assert_properties(&isvc, "spec.predictor", crate::serving::isvc::COMPONENT_KNOWN);
        assert_properties(&isvc, "spec.transformer", &component_fields(true));
        assert_properties(&isvc, "spec.predictor.model", crate::serving::isvc::MODEL_FIELDS);
        assert_properties(&isvc, "spec.predictor.sklearn", &model_fields(true));
        assert_properties(
            &isvc,
            "spec.transformer.containers.[]",
            &custom_container_fields(),
        );
        // The subsets drop only what upstream lacks.
        assert_eq!(
            model_fields(true).len() + NOT_IN_FRAMEWORK_SPECS.len(),
            model_fields(false).len()
        );
        assert_eq!(
            component_fields(true),
            [
                "containers",
                "minReplicas",
                "maxReplicas",
                "scaleTarget",
                "scaleMetric",
                "containerConcurrency",
                "timeout",
                "canaryTrafficPercent"
            ]
        );
    }

    #[test]
    fn schemas_are_named_as_the_api_server_names_them() {
        let names: Vec<String> = KINDS.iter().map(|k| schema_name(k)).collect();
        assert_eq!(
            names,
            [
                "io.k8s.api.batch.v1.Job",
                "io.kserve.serving.v1beta1.InferenceService",
                "io.k8s.api.core.v1.Namespace",
                "io.k8s.api.core.v1.Pod",
                "io.k8s.api.core.v1.Node",
                "io.k8s.api.core.v1.Event",
                "io.kserve.serving.v1alpha1.ClusterServingRuntime",
                "org.kubeflow.v1beta1.Experiment",
                "org.kubeflow.v1beta1.Trial",
                "org.kubeflow.v1beta1.Suggestion",
                "org.kubeflow.v1.Notebook",
                "org.kubeflow.v1beta1.Notebook"
            ]
        );
        assert_eq!(name_for("", "v1", "Pod"), "io.k8s.api.core.v1.Pod");
        assert_eq!(
            name_for("authentication.k8s.io", "v1", "SelfSubjectReview"),
            "io.k8s.api.authentication.v1.SelfSubjectReview"
        );
    }
}
