//! Core data types shared by every module: API-call events, derived entities and windows,
//! anomaly and alert documents. This module imports nothing else of ours.

pub mod anomaly;
pub mod event;
pub mod intern;
pub mod journey;
pub mod time;
pub mod window;

pub use anomaly::{Alert, AlertStatus, Anomaly, AnomalyKind, Contributor, Severity};
pub use event::Event;
pub use intern::{Interner, Sym};
pub use journey::{HopRecord, JourneyRecord};
pub use window::{EntityKey, EntityKind, ServiceMetrics, WindowStat};
