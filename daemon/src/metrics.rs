//! Prometheus metrics: the process itself, HTTP traffic by route and status, and
//! whatever other parts register (GPU gauges under dcgm-exporter's names).

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

struct ProcessGauges {
    resident: Gauge,
    virtual_mem: Gauge,
    cpu_millis: Gauge,
    open_fds: Gauge,
    threads: Gauge,
    start_time: Gauge,
}

/// GPU gauges under dcgm-exporter's names and labels, so NVIDIA's Grafana dashboard
/// works unchanged. Simulated GPUs carry `simulated="true"`.
struct GpuGauges {
    util: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    fb_used: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    fb_free: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    temp: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    power: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    pub runtime: String,
}

/// Tokio runtimes whose task counts are exported: a count that grows while the
/// workload does not is a leak (e.g. one sleeping task per requeue).
struct RuntimeGauges {
    handles: Mutex<Vec<(String, tokio::runtime::Handle)>>,
    alive_tasks: Family<RuntimeLabels, Gauge>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    runtimes: RuntimeGauges,
    gpu: GpuGauges,
    http_requests: Family<HttpLabels, Counter>,
    http_latency: Family<RouteLabels, Histogram>,
    process: ProcessGauges,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "hearth_http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let http_latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "hearth_http_request_duration_seconds",
            "Time to answer an HTTP request",
            http_latency.clone(),
        );
        let process = ProcessGauges {
            resident: Gauge::default(),
            virtual_mem: Gauge::default(),
            cpu_millis: Gauge::default(),
            open_fds: Gauge::default(),
            threads: Gauge::default(),
            start_time: Gauge::default(),
        };
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process.resident.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            process.virtual_mem.clone(),
        );
        registry.register(
            "process_cpu_milliseconds",
            "User and system CPU time spent, in milliseconds",
            process.cpu_millis.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            process.open_fds.clone(),
        );
        registry.register("process_threads", "OS threads", process.threads.clone());
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            process.start_time.clone(),
        );
        let runtimes = RuntimeGauges {
            handles: Mutex::new(Vec::new()),
            alive_tasks: Family::default(),
        };
        registry.register(
            "hearth_tokio_alive_tasks",
            "Tasks alive on each of the daemon's tokio runtimes (core: controllers and scheduler; main: the serving controller and background loop)",
            runtimes.alive_tasks.clone(),
        );
        let gpu = GpuGauges {
            util: Family::default(),
            fb_used: Family::default(),
            fb_free: Family::default(),
            temp: Family::default(),
            power: Family::default(),
        };
        registry.register("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)", gpu.util.clone());
        registry.register(
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB)",
            gpu.fb_used.clone(),
        );
        registry.register(
            "DCGM_FI_DEV_FB_FREE",
            "Framebuffer memory free (in MiB)",
            gpu.fb_free.clone(),
        );
        registry.register("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)", gpu.temp.clone());
        registry.register("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)", gpu.power.clone());
        Metrics {
            registry: Mutex::new(registry),
            runtimes,
            gpu,
            http_requests,
            http_latency,
            process,
        }
    }

    /// Replaces the GPU gauges with the latest inventory.
    pub fn set_gpus(&self, inventory: &crate::gpu::GpuInventory) {
        let families = [
            &self.gpu.util,
            &self.gpu.fb_used,
            &self.gpu.fb_free,
            &self.gpu.temp,
            &self.gpu.power,
        ];
        for family in families {
            family.clear();
        }
        let hostname = crate::node::hostname();
        const MIB: f64 = 1024.0 * 1024.0;
        for device in &inventory.devices {
            let mut labels = vec![
                ("gpu".to_string(), device.index.to_string()),
                ("UUID".to_string(), device.uuid.clone()),
                ("device".to_string(), format!("nvidia{}", device.index)),
                ("modelName".to_string(), device.name.clone()),
                ("Hostname".to_string(), hostname.clone()),
            ];
            if device.simulated {
                labels.push(("simulated".to_string(), "true".to_string()));
            }
            self.gpu
                .util
                .get_or_create(&labels)
                .set(f64::from(device.utilization_percent));
            self.gpu
                .fb_used
                .get_or_create(&labels)
                .set(device.memory_used_bytes as f64 / MIB);
            self.gpu
                .fb_free
                .get_or_create(&labels)
                .set(device.memory_total_bytes.saturating_sub(device.memory_used_bytes) as f64 / MIB);
            self.gpu
                .temp
                .get_or_create(&labels)
                .set(f64::from(device.temperature_celsius));
            self.gpu.power.get_or_create(&labels).set(device.power_watts);
        }
    }

    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Exports `hearth_tokio_alive_tasks{runtime=name}` for this runtime.
    pub fn watch_runtime(&self, name: &str, handle: tokio::runtime::Handle) {
        self.runtimes
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name.to_string(), handle));
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.http_latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The exposition text as one caller may see it: every sample whose `namespace`
    /// label names a namespace `can_see` refuses is left out (its `# HELP`/`# TYPE`
    /// lines stay; OpenMetrics allows a family without samples). Series without a
    /// `namespace` label (the process, the API, the GPUs) are node-wide and kept.
    pub fn render_for(&self, can_see: impl Fn(&str) -> bool) -> String {
        let all = self.render();
        let mut out = String::with_capacity(all.len());
        for line in all.split_inclusive('\n') {
            if line.starts_with('#') || sample_namespace(line).is_none_or(&can_see) {
                out.push_str(line);
            }
        }
        out
    }

    /// The exposition text; process gauges are read fresh on each scrape.
    pub fn render(&self) -> String {
        self.refresh_process();
        for (name, handle) in self
            .runtimes
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let alive = i64::try_from(handle.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
            self.runtimes
                .alive_tasks
                .get_or_create(&RuntimeLabels {
                    runtime: name.clone(),
                })
                .set(alive);
        }
        // A registry poisoned by a panicking registration is still a registry: render
        // it rather than answer an empty page.
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }

    fn refresh_process(&self) {
        let stat = crate::node::ProcSelf::read();
        self.process.resident.set(stat.resident_bytes as i64);
        self.process.virtual_mem.set(stat.virtual_bytes as i64);
        self.process.cpu_millis.set(stat.cpu_millis as i64);
        self.process.open_fds.set(stat.open_fds as i64);
        self.process.threads.set(stat.threads as i64);
        self.process.start_time.set(stat.start_time_seconds as i64);
    }
}

/// The value of a sample line's `namespace` label, if it has one. Label values are
/// escaped by the encoder (`\\`, `\"`, `\n`), so a quote inside a value is always
/// preceded by a backslash; namespace names are DNS labels and contain none.
fn sample_namespace(line: &str) -> Option<&str> {
    let open = line.find('{')?;
    let labels = &line[open + 1..];
    let mut rest = labels;
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let value = after.get(..end)?;
        if name.trim_start_matches(',') == "namespace" {
            return Some(value);
        }
        rest = after.get(end + 1..)?;
        if rest.starts_with('}') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_label_is_found_wherever_it_stands_and_escapes_do_not_fool_it() {
        let line = "hearth_serving_requests_total{namespace=\"alice\",service=\"s\",revision=\"r\",code=\"200\"} 3\n";
        assert_eq!(sample_namespace(line), Some("alice"));
        let line = "x_bucket{service=\"a\\\",namespace=\\\"bob\",namespace=\"carol\",le=\"0.1\"} 1\n";
        assert_eq!(sample_namespace(line), Some("carol"));
        assert_eq!(sample_namespace("process_threads 7\n"), None);
        assert_eq!(
            sample_namespace("DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-1\"} 0.0\n"),
            None
        );
        assert_eq!(sample_namespace("y{mynamespace=\"alice\"} 1\n"), None);
    }

    #[test]
    fn a_caller_sees_only_the_series_of_namespaces_it_may_see() {
        let metrics = Metrics::new();
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        metrics.register("hearth_test_series", "test", family.clone());
        for namespace in ["alice", "bob"] {
            family
                .get_or_create(&vec![("namespace".to_string(), namespace.to_string())])
                .set(1);
        }
        let alice = metrics.render_for(|ns| ns == "alice");
        assert!(
            alice.contains("hearth_test_series{namespace=\"alice\"} 1"),
            "{alice}"
        );
        assert!(!alice.contains("bob"), "{alice}");
        assert!(alice.contains("# TYPE hearth_test_series gauge"), "{alice}");
        assert!(alice.contains("process_threads"), "{alice}");
        assert!(alice.trim_end().ends_with("# EOF"), "{alice}");
        let all = metrics.render_for(|_| true);
        assert!(
            all.contains("namespace=\"bob\"") && all.contains("namespace=\"alice\""),
            "{all}"
        );
    }
}
