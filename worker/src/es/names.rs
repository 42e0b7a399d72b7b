//! Index names: the defaults of `shared/spec/outputs.md`, all derived from one prefix so that
//! several deployments (or tests) share a cluster without touching each other.

use crate::model::time::Millis;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexNames {
    pub prefix: String,
    /// What the worker reads (an index pattern, data stream or alias).
    pub logs: String,
    pub anomalies: String,
    pub alerts: String,
    pub journeys: String,
    pub services: String,
    pub state: String,
    pub deadletter: String,
    /// Acknowledgements, silences and verdicts (see [`crate::feedback`]).
    pub feedback: String,
}

impl Default for IndexNames {
    fn default() -> Self {
        IndexNames::with_prefix("apiwatch")
    }
}

impl IndexNames {
    pub fn with_prefix(prefix: &str) -> Self {
        IndexNames {
            prefix: prefix.to_owned(),
            logs: "logs-apiwatch.calls-*".to_owned(),
            anomalies: format!("{prefix}-anomalies"),
            alerts: format!("{prefix}-alerts"),
            journeys: format!("{prefix}-journeys"),
            services: format!("{prefix}-services"),
            state: format!("{prefix}-state"),
            deadletter: format!("{prefix}-deadletter"),
            feedback: format!("{prefix}-feedback"),
        }
    }

    /// The monthly index an anomaly of data time `t` goes to (behind the alias): the same
    /// anomaly always lands in the same index, so a rerun overwrites rather than duplicates.
    pub fn anomalies_index(&self, t: Millis) -> String {
        format!("{}-{}", self.anomalies, month(t))
    }

    pub fn journeys_index(&self, t: Millis) -> String {
        format!("{}-{}", self.journeys, month(t))
    }
}

fn month(t: Millis) -> String {
    let d = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
    d.format("%Y.%m").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monthly_indices_follow_data_time() {
        let n = IndexNames::with_prefix("x");
        // 2026-03-02T00:00:00Z
        assert_eq!(n.anomalies_index(1_772_409_600_000), "x-anomalies-2026.03");
        assert_eq!(n.journeys_index(0), "x-journeys-1970.01");
        assert_eq!(n.state, "x-state");
    }
}
