//! The admission decision, as a pure function of capacity, what runs and what waits.
//! Order is priority class, then FIFO. A workload that cannot start yet keeps its
//! claim on what is free (conservative backfill): later, smaller workloads may start
//! only with what that claim leaves, so a large request is never starved.

use std::collections::BTreeMap;

use crate::gpu::ledger::Ledger;
use crate::runtime::ResourceRequest;

#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Running {
    pub namespace: String,
    pub request: ResourceRequest,
}

#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
    pub namespace: String,
    pub request: ResourceRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Admit { id: String, gpu_uuids: Vec<String> },
    Wait { id: String, reason: String },
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn cores(millis: u64) -> String {
    format!("{:.2}", millis as f64 / 1000.0)
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

pub fn plan(
    capacity: &Capacity,
    mut ledger: Ledger,
    running: &[Running],
    waiting: &[Waiting],
    gpu_quota: &dyn Fn(&str) -> Option<u32>,
) -> Vec<Decision> {
    let mut free_cpu = capacity
        .cpu_millis
        .saturating_sub(running.iter().map(|r| r.request.cpu_millis).sum());
    let mut free_mem = capacity
        .memory_bytes
        .saturating_sub(running.iter().map(|r| r.request.memory_bytes).sum());
    let mut ns_gpus: BTreeMap<&str, u32> = BTreeMap::new();
    for r in running {
        *ns_gpus.entry(r.namespace.as_str()).or_default() += r.request.gpus;
    }

    let mut decisions = Vec::with_capacity(waiting.len());
    for (index, item) in waiting.iter().enumerate() {
        let position = ordinal(index + 1);
        let want = item.request;
        if want.gpus > 0 {
            if let Some(quota) = gpu_quota(&item.namespace) {
                let used = ns_gpus.get(item.namespace.as_str()).copied().unwrap_or(0);
                if used + want.gpus > quota {
                    decisions.push(Decision::Wait {
                        id: item.id.clone(),
                        reason: format!(
                            "namespace {} is at its GPU quota ({used} of {quota} in use, {} requested); {position} in queue",
                            item.namespace,
                            plural(want.gpus, "GPU")
                        ),
                    });
                    continue;
                }
            }
        }
        let free_gpus = ledger.free_gpus();
        let fits = want.cpu_millis <= free_cpu && want.memory_bytes <= free_mem && want.gpus <= free_gpus;
        if fits {
            let gpu_uuids = ledger.allocate(want.gpus).unwrap_or_default();
            free_cpu -= want.cpu_millis;
            free_mem -= want.memory_bytes;
            *ns_gpus.entry(item.namespace.as_str()).or_default() += want.gpus;
            decisions.push(Decision::Admit {
                id: item.id.clone(),
                gpu_uuids,
            });
            continue;
        }
        let reason = if want.gpus > free_gpus {
            format!(
                "waiting for {}, {free_gpus} free; {position} in queue",
                plural(want.gpus, "GPU")
            )
        } else if want.cpu_millis > free_cpu {
            format!(
                "waiting for {} CPU, {} free; {position} in queue",
                cores(want.cpu_millis),
                cores(free_cpu)
            )
        } else {
            format!(
                "waiting for {} memory, {} free; {position} in queue",
                gib(want.memory_bytes),
                gib(free_mem)
            )
        };
        decisions.push(Decision::Wait {
            id: item.id.clone(),
            reason,
        });
        // Hold what is free for this one so that later work cannot starve it.
        free_cpu = free_cpu.saturating_sub(want.cpu_millis);
        free_mem = free_mem.saturating_sub(want.memory_bytes);
        let _ = ledger.allocate(want.gpus.min(ledger.free_gpus()));
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_job(id: &str, gpus: u32) -> Waiting {
        Waiting {
            id: id.into(),
            namespace: "team".into(),
            request: ResourceRequest {
                gpus,
                ..Default::default()
            },
        }
    }

    fn cap() -> Capacity {
        Capacity {
            cpu_millis: 2000,
            memory_bytes: 8 << 30,
        }
    }

    #[test]
    fn two_of_three_one_gpu_jobs_start_on_two_gpus() {
        let ledger = Ledger::new(["g0", "g1"], 1, []);
        let d = plan(
            &cap(),
            ledger,
            &[],
            &[gpu_job("a", 1), gpu_job("b", 1), gpu_job("c", 1)],
            &|_| None,
        );
        assert!(matches!(&d[0], Decision::Admit { gpu_uuids, .. } if gpu_uuids == &["g0"]));
        assert!(matches!(&d[1], Decision::Admit { gpu_uuids, .. } if gpu_uuids == &["g1"]));
        assert_eq!(
            d[2],
            Decision::Wait {
                id: "c".into(),
                reason: "waiting for 1 GPU, 0 free; 3rd in queue".into()
            }
        );
    }

    #[test]
    fn a_blocked_large_request_is_not_starved_by_small_ones() {
        let ledger = Ledger::new(["g0", "g1"], 1, ["g0"]);
        let running = [Running {
            namespace: "team".into(),
            request: ResourceRequest {
                gpus: 1,
                ..Default::default()
            },
        }];
        let d = plan(
            &cap(),
            ledger,
            &running,
            &[gpu_job("big", 2), gpu_job("small", 1)],
            &|_| None,
        );
        assert_eq!(
            d[0],
            Decision::Wait {
                id: "big".into(),
                reason: "waiting for 2 GPUs, 1 free; 1st in queue".into()
            }
        );
        assert!(
            matches!(&d[1], Decision::Wait { .. }),
            "small must not take the GPU big is waiting for"
        );
    }

    #[test]
    fn cpu_only_work_passes_a_gpu_wait() {
        let ledger = Ledger::new(["g0"], 1, ["g0"]);
        let cpu = Waiting {
            id: "cpu".into(),
            namespace: "team".into(),
            request: ResourceRequest {
                cpu_millis: 500,
                ..Default::default()
            },
        };
        let d = plan(&cap(), ledger, &[], &[gpu_job("g", 1), cpu], &|_| None);
        assert!(matches!(&d[1], Decision::Admit { .. }));
    }

    #[test]
    fn namespace_quota_holds_work_back() {
        let ledger = Ledger::new(["g0", "g1"], 1, []);
        let d = plan(&cap(), ledger, &[], &[gpu_job("a", 1), gpu_job("b", 1)], &|_| {
            Some(1)
        });
        assert!(matches!(&d[0], Decision::Admit { .. }));
        assert!(matches!(&d[1], Decision::Wait { reason, .. } if reason.contains("quota")));
    }
}
