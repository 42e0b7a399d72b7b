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

use serde_json::{json, Value};

use super::client::{EsClient, EsError};
use crate::job::partition::partition_of;

/// Keys fetched per aggregation page.
const PAGE: usize = 2_000;

/// The distinct values of `field` among the documents of `index` matching `query`, sorted.
pub fn keys(client: &EsClient, index: &str, field: &str, query: &Value) -> Result<Vec<String>, EsError> {
    let path = format!("/{index}/_search?ignore_unavailable=true&allow_no_indices=true");
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
        assert_eq!(zero["bool"]["should"][1]["bool"]["must_not"]["exists"]["field"], "service.name");
    }
}
