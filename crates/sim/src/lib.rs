//! A discrete-event simulation of an idlegrid network: devices with
//! heterogeneous speed, churn, latency and cheating strategies, driving the
//! real [`idlegrid_market::Market`].

pub mod plot;
pub mod sweep;
mod world;

pub use world::{
    CapacityStats, DeviceStats, Report, SimConfig, Simulation, Strategy, StrategyStats,
};

/// The state of a run at one moment, for the CSV and the chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Simulated milliseconds since the start.
    pub time_ms: u64,
    pub tasks_accepted: u64,
    pub tasks_failed: u64,
    /// Fuel of every result the market received, replicas included.
    pub fuel_executed: u64,
    /// Fuel of accepted results, once per task.
    pub fuel_useful: u64,
    pub devices_online: u64,
    pub tasks_in_flight: u64,
    pub wrong_accepted: u64,
    pub cheaters_detected: u64,
    /// Sum of the latest vouchers.
    pub paid: u64,
}

impl Sample {
    /// Fuel executed per unit of useful fuel (1.0 = no verification cost).
    pub fn overhead(&self) -> f64 {
        if self.fuel_useful == 0 {
            0.0
        } else {
            self.fuel_executed as f64 / self.fuel_useful as f64
        }
    }
}
