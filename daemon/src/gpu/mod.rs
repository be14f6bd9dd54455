//! GPU inventory. NVML is asked when the driver is there; without it Hearth reports
//! 0 GPUs and why. `[gpu] simulate = N` reports N fake devices for tests, and every
//! answer that shows them says `simulated: true`.

pub mod inventory;
pub mod ledger;

pub use inventory::{GpuInventory, GpuProbe};
