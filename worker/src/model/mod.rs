//! Core data types shared by every module: API-call events, derived entities and windows,
//! anomaly and alert documents. This module imports nothing else of ours.

pub mod anomaly;
pub mod event;
pub mod features;
pub mod intern;
pub mod journey;
pub mod service;
pub mod time;
pub mod window;

pub use anomaly::{Alert, AlertStatus, Anomaly, AnomalyKind, Contributor, Severity, Weight};
pub use event::Event;
pub use intern::{hash_str, Interner, Sym};
pub use journey::{HopRecord, JourneyRecord};
pub use window::{EntityKey, EntityKind, ServiceMetrics, WindowStat};
