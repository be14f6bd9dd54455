//! Readiness of the daemon's parts. Each part (store, runtime, each controller)
//! reports itself; `/readyz` and the systemd status read the sum.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct ComponentStatus {
    pub name: String,
    pub ready: bool,
    pub detail: String,
}

#[derive(Clone, Default)]
pub struct Health {
    components: Arc<RwLock<BTreeMap<String, ComponentStatus>>>,
}

impl Health {
    pub fn set(&self, name: &str, ready: bool, detail: impl Into<String>) {
        let status = ComponentStatus {
            name: name.to_string(),
            ready,
            detail: detail.into(),
        };
        if let Ok(mut map) = self.components.write() {
            map.insert(name.to_string(), status);
        }
    }

    pub fn components(&self) -> Vec<ComponentStatus> {
        match self.components.read() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        }
    }

    pub fn all_ready(&self) -> bool {
        let components = self.components();
        !components.is_empty() && components.iter().all(|c| c.ready)
    }
}
