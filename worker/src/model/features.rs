//! The request feature contract between the worker and its models: the AutoEncoder is trained
//! (`apiwatch features`, `scripts/train`) and scored on vectors in exactly this order, and each
//! model's card lists these names so that a model trained on another list is refused.

/// Request feature names, in vector order (also the column order `apiwatch features` exports).
pub const REQUEST_FEATURES: [&str; 7] = [
    "latency_vs_route",
    "status_class",
    "request_bytes_vs_route",
    "response_bytes_vs_route",
    "client_ip_rarity",
    "user_agent_rarity",
    "hour_of_day",
];
