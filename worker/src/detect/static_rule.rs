//! The rule most shops run today, kept as a yardstick for the evaluation: per service, p95
//! latency above three times its warm-up p95, or a 5xx rate above 5%.

use rustc_hash::FxHashMap;

use super::stats::median;
use super::{entity_label, fmt_ms, fmt_pct, Detector, Evicted, Finding, WindowContext};
use crate::model::anomaly::{Anomaly, AnomalyKind};
use crate::model::EntityKind;

const WARMUP_WINDOWS: usize = 30;

#[derive(serde::Serialize, serde::Deserialize, Default)]
pub struct StaticRuleDetector {
    warmup: FxHashMap<u32, Vec<f64>>,
    limit: FxHashMap<u32, f64>,
}

impl Detector for StaticRuleDetector {
    fn name(&self) -> &'static str {
        "static_rule"
    }

    fn forget(&mut self, evicted: &Evicted) {
        self.warmup.retain(|id, _| !evicted.id(*id));
        self.limit.retain(|id, _| !evicted.id(*id));
    }

    fn close_window(&mut self, w: &WindowContext<'_>, out: &mut Vec<Anomaly>) {
        for st in w.stats.iter().filter(|s| s.key.kind() == EntityKind::Service && s.count >= 10) {
            let label = entity_label(w.names, &st.key);
            if st.rate_5xx() > 0.05 {
                let mut f = Finding::new(AnomalyKind::Errors, "static_rule", st.key, (w.start, w.end));
                f.score = 70.0;
                f.metric = "errors.5xx_rate";
                f.actual = Some(st.rate_5xx());
                f.expected = Some(0.05);
                f.reason = format!("5xx rate of {label} is {} (limit 5%)", fmt_pct(st.rate_5xx()));
                f.impact_calls = st.errors_5xx;
                f.impact_users = st.users;
                out.push(f.into_anomaly(w.names));
            }
            match self.limit.get(&st.entity) {
                None => {
                    let v = self.warmup.entry(st.entity).or_default();
                    v.push(st.p95_ms);
                    if v.len() >= WARMUP_WINDOWS {
                        self.limit.insert(st.entity, 3.0 * median(v));
                    }
                }
                Some(&limit) if st.p95_ms > limit => {
                    let mut f = Finding::new(AnomalyKind::Latency, "static_rule", st.key, (w.start, w.end));
                    f.score = 70.0;
                    f.metric = "latency.p95";
                    f.actual = Some(st.p95_ms);
                    f.expected = Some(limit / 3.0);
                    f.reason = format!("p95 latency of {label} is {} (limit {})", fmt_ms(st.p95_ms), fmt_ms(limit));
                    f.impact_calls = st.count;
                    f.impact_users = st.users;
                    out.push(f.into_anomaly(w.names));
                }
                Some(_) => {}
            }
        }
    }
}
