//! The query that reads one partition's events, without scripts: the worker lists the values
//! of the partition key present in a range ([`keys`], a composite aggregation over doc values,
//! paged), hashes them with [`crate::job::partition::partition_of`] and reads with a `terms`
//! filter on its own ([`filter`]). Documents without the key, or whose value was too long to be
//! indexed (`ignore_above`, so no terms query can find it), belong to partition 0, as
//! `partition_of("")` does.
//!
//! Why not a runtime field hashing in a Painless script: scripts are an optional module (the
//! integration-test distribution has none, and some clusters disable them), and a script runs
//! per document where the key list is one aggregation per range.
//!
//! A call's caller is a span another partition may hold: [`callers`] looks the callers of a
//! page of calls up by id, reading only the fields that name them.

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use crate::job::partition::partition_of;
use crate::model::time::{format_rfc3339, Millis};

/// Keys fetched per aggregation page.
const PAGE: usize = 2_000;

/// The distinct values of `field` among the documents of `index` matching `query`, sorted.
pub fn keys(client: &EsClient, index: &str, field: &str, query: &Value) -> Result<Vec<String>, EsError> {
    let path = format!("/{index}/_search?ignore_unavailable=true&allow_no_indices=true&allow_partial_search_results=false");
    let mut out = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut composite = json!({"size": PAGE, "sources": [{"key": {"terms": {"field": field}}}]});
        if let Some(a) = &after {
            composite["after"] = a.clone();
        }
        let body = json!({"size": 0, "track_total_hits": false, "query": query, "aggs": {"keys": {"composite": composite}}});
        let (status, v) = client.json_status("POST", &path, Some(&body))?;
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, v.to_string()));
        }
        let buckets = v
            .pointer("/aggregations/keys/buckets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        out.extend(buckets.iter().filter_map(|b| b["key"]["key"].as_str().map(str::to_owned)));
        match v.pointer("/aggregations/keys/after_key") {
            Some(a) if buckets.len() == PAGE => after = Some(a.clone()),
            _ => break,
        }
    }
    out.sort();
    Ok(out)
}

/// The filter clause that keeps partition `index` of `count` by `field`, given the keys present.
pub fn filter(field: &str, keys: &[String], index: u32, count: u32) -> Value {
    let mine: Vec<&String> = keys.iter().filter(|k| partition_of(k, count) == index).collect();
    let terms = json!({"terms": {field: mine}});
    if index != 0 {
        return terms;
    }
    // Partition 0 also holds the documents without an indexed value.
    json!({"bool": {"should": [terms, {"bool": {"must_not": {"exists": {"field": field}}}}], "minimum_should_match": 1}})
}

/// Narrows a search body to partition `index` of `count` by `field` (wrapping whatever query
/// the body had in a `bool` filter).
pub fn narrow(body: &mut Value, field: &str, keys: &[String], index: u32, count: u32) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    let query = obj.remove("query").unwrap_or_else(|| json!({"match_all": {}}));
    obj.insert(
        "query".into(),
        json!({"bool": {"filter": [query, filter(field, keys, index, count)]}}),
    );
}

/// A call's caller as the log indices record it: `(span id, service, provider)`.
pub type CallerSpan = (String, String, String);

/// The spans among `ids` recorded in `index` from `from` to `to`, with their service and
/// provider: the callers a partition's calls name, which another partition scores. One narrow
/// search per thousands of ids (only the doc values that name a caller are read). ECS events carry
/// their id in `span.id`, Elastic APM transactions in `transaction.id`; APM documents without
/// `cloud.provider` ran on premises, as the reader takes them.
pub fn callers(client: &EsClient, index: &str, ids: &[String], (from, to): (Millis, Millis)) -> Result<Vec<CallerSpan>, EsError> {
    let path = format!("/{index}/_search?ignore_unavailable=true&allow_no_indices=true&allow_partial_search_results=false");
    let mut out = Vec::new();
    for chunk in ids.chunks(CALLERS_PER_SEARCH) {
        let body = json!({
            "size": chunk.len() + 100,
            "track_total_hits": false,
            // Doc values: no stored document is read (a field an index lacks is left out).
            "_source": false,
            "docvalue_fields": ["span.id", "transaction.id", "service.name", "cloud.provider", "processor.event"],
            "query": {"bool": {
                "filter": [{"range": {"@timestamp": {"gte": format_rfc3339(from), "lt": format_rfc3339(to), "format": "strict_date_optional_time"}}}],
                "should": [
                    {"terms": {"span.id": chunk}},
                    {"bool": {"filter": [{"terms": {"transaction.id": chunk}}, {"term": {"processor.event": "transaction"}}]}}
                ],
                "minimum_should_match": 1
            }}
        });
        let (status, v) = client.json_status("POST", &path, Some(&body))?;
        if status == 404 {
            return Ok(out);
        }
        if !(200..300).contains(&status) {
            return Err(EsError::status(status, "POST", path, v.to_string()));
        }
        for hit in v.pointer("/hits/hits").and_then(Value::as_array).into_iter().flatten() {
            out.extend(caller_of(&hit["fields"]));
        }
    }
    Ok(out)
}

/// Ids per caller search (well under Elasticsearch's 65536 terms and 10000 hits).
const CALLERS_PER_SEARCH: usize = 4_000;

/// The caller a hit's doc values record, if they name its span and service.
fn caller_of(fields: &Value) -> Option<CallerSpan> {
    let field = |name: &str| fields.get(name)?.get(0)?.as_str().map(str::to_owned);
    let apm = field("processor.event");
    let id = match apm.as_deref() {
        Some("transaction") => field("transaction.id"),
        _ => field("span.id"),
    }?;
    let service = field("service.name")?;
    let provider = match (field("cloud.provider"), apm) {
        (Some(p), _) => p,
        (None, Some(_)) => crate::source::json::APM_DEFAULT_PROVIDER.to_owned(),
        (None, None) => return None,
    };
    Some((id, service, provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_the_query_and_adds_the_partitions_keys() {
        let keys: Vec<String> = (0..40).map(|i| format!("svc-{i}")).collect();
        let mut body = json!({"size": 10, "query": {"range": {"@timestamp": {"gte": 0}}}});
        narrow(&mut body, "service.name", &keys, 3, 8);
        assert_eq!(body["query"]["bool"]["filter"][0]["range"]["@timestamp"]["gte"], 0);
        let listed = body["query"]["bool"]["filter"][1]["terms"]["service.name"].as_array().unwrap();
        assert!(!listed.is_empty() && listed.len() < keys.len());
        assert!(listed.iter().all(|k| partition_of(k.as_str().unwrap(), 8) == 3));
        assert_eq!(body["size"], 10);
        // Partition 0 also takes documents without the key.
        let zero = filter("service.name", &keys, 0, 8);
        assert_eq!(
            caller_of(&json!({"span.id": ["s1"], "service.name": ["gw"], "cloud.provider": ["aws"]})),
            Some(("s1".into(), "gw".into(), "aws".into()))
        );
        let apm = json!({"processor.event": ["transaction"], "transaction.id": ["t1"], "service.name": ["pay"]});
        assert_eq!(caller_of(&apm), Some(("t1".into(), "pay".into(), "onprem".into())));
        let no_provider = json!({"span.id": ["s2"], "service.name": ["x"]});
        assert_eq!(caller_of(&no_provider), None, "an ECS event without a provider is refused");
        assert_eq!(zero["bool"]["should"][1]["bool"]["must_not"]["exists"]["field"], "service.name");
    }
}
