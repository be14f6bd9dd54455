//! Which GPU each workload gets. Whole GPUs, exclusive unless time-slicing shares each
//! GPU `replicas` ways. The ledger is derived from the workloads that are starting or
//! running (their `gpu_uuids` are persisted), so a restart rebuilds it exactly.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Ledger {
    /// Slots in use per GPU, in inventory order.
    used: Vec<(String, u32)>,
    replicas: u32,
}

impl Ledger {
    pub fn new<'a>(
        gpus: impl IntoIterator<Item = &'a str>,
        replicas: u32,
        allocations: impl IntoIterator<Item = &'a str>,
    ) -> Ledger {
        let mut used: Vec<(String, u32)> = gpus.into_iter().map(|u| (u.to_string(), 0)).collect();
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for uuid in allocations {
            *counts.entry(uuid).or_default() += 1;
        }
        for (uuid, n) in used.iter_mut() {
            *n = counts.get(uuid.as_str()).copied().unwrap_or(0);
        }
        Ledger {
            used,
            replicas: replicas.max(1),
        }
    }

    /// GPUs with at least one free slot.
    pub fn free_gpus(&self) -> u32 {
        self.used.iter().filter(|(_, n)| *n < self.replicas).count() as u32
    }

    /// Slots in use across all GPUs.
    #[cfg(test)]
    fn in_use(&self) -> u32 {
        self.used.iter().map(|(_, n)| *n).sum()
    }

    /// GPUs busy with at least one workload.
    pub fn busy_gpus(&self) -> usize {
        self.used.iter().filter(|(_, n)| *n > 0).count()
    }

    /// Picks `n` distinct GPUs with a free slot, least loaded first, and takes them.
    pub fn allocate(&mut self, n: u32) -> Option<Vec<String>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if self.free_gpus() < n {
            return None;
        }
        let mut order: Vec<usize> = (0..self.used.len())
            .filter(|&i| self.used[i].1 < self.replicas)
            .collect();
        order.sort_by_key(|&i| (self.used[i].1, i));
        let chosen: Vec<usize> = order.into_iter().take(n as usize).collect();
        let mut uuids = Vec::with_capacity(chosen.len());
        for i in chosen {
            self.used[i].1 += 1;
            uuids.push(self.used[i].0.clone());
        }
        Some(uuids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_gpus_are_not_shared() {
        let mut ledger = Ledger::new(["a", "b"], 1, []);
        assert_eq!(ledger.allocate(1), Some(vec!["a".to_string()]));
        assert_eq!(ledger.allocate(1), Some(vec!["b".to_string()]));
        assert_eq!(ledger.allocate(1), None);
    }

    #[test]
    fn time_slicing_shares_least_loaded_first() {
        let mut ledger = Ledger::new(["a", "b"], 2, ["a"]);
        assert_eq!(ledger.allocate(1), Some(vec!["b".to_string()]));
        assert_eq!(ledger.allocate(2).map(|v| v.len()), Some(2));
        assert_eq!(ledger.allocate(1), None);
    }

    #[test]
    fn rebuilt_from_allocations() {
        let ledger = Ledger::new(["a", "b", "c"], 1, ["b", "c"]);
        assert_eq!(ledger.free_gpus(), 1);
        assert_eq!(ledger.in_use(), 2);
    }
}
