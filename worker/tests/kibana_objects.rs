//! The Kibana saved objects (kibana/apiwatch-saved-objects.ndjson): every object parses, every
//! reference resolves, and every field a data view, visualization, saved search, query or
//! control uses exists in the index templates with a type that use accepts. Kibana is not
//! installable here, so `apiwatch setup --kibana` is tested against a local HTTP receiver in
//! its own unit test; these checks are what can go wrong between the objects and the indices.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step in a test is its failure

mod common;
use common::{repo_root, template_fields};

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

fn objects() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("kibana/apiwatch-saved-objects.ndjson")).unwrap();
    text.lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", i + 1)))
        .collect()
}

/// Data view id → the fields of the index template its pattern matches.
fn data_view_fields(objs: &[Value]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut templates = Vec::new();
    for f in std::fs::read_dir(repo_root().join("es-templates/index")).unwrap() {
        let t: Value = serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap();
        templates.push(t);
    }
    objs.iter()
        .filter(|o| o["type"] == "index-pattern")
        .map(|o| {
            let title = o["attributes"]["title"].as_str().unwrap();
            let t = templates
                .iter()
                .find(|t| t["index_patterns"].as_array().unwrap().iter().any(|p| p == title))
                .unwrap_or_else(|| panic!("no index template has the pattern {title}"));
            let mut fields = BTreeMap::new();
            for c in t["composed_of"].as_array().unwrap() {
                let c = c.as_str().unwrap();
                if c.ends_with("-mappings") {
                    fields.extend(template_fields(c));
                }
            }
            (o["id"].as_str().unwrap().to_owned(), fields)
        })
        .collect()
}

const NUMERIC: [&str; 5] = ["long", "integer", "float", "double", "scaled_float"];

fn accepts(operation: &str, ty: &str) -> bool {
    match operation {
        "date_histogram" => ty == "date",
        "terms" => matches!(ty, "keyword" | "ip" | "boolean") || NUMERIC.contains(&ty),
        "percentile" | "average" | "median" | "sum" | "min" | "max" | "standard_deviation" => NUMERIC.contains(&ty),
        "unique_count" | "count" | "last_value" => ty != "text",
        _ => false,
    }
}

/// Field names a KQL query compares (`a.b : x`, `a.b >= 5`).
fn kql_fields(q: &str) -> Vec<String> {
    let tokens: Vec<&str> = q.split_whitespace().collect();
    tokens
        .windows(2)
        .filter(|w| matches!(w[1], ":" | ">=" | "<=" | ">" | "<"))
        .map(|w| w[0].trim_start_matches(['(', '!']).to_owned())
        .collect()
}

#[test]
fn every_reference_resolves_and_every_panel_has_its_reference() {
    let objs = objects();
    let ids: BTreeSet<(String, String)> = objs
        .iter()
        .map(|o| (o["type"].as_str().unwrap().to_owned(), o["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(ids.len(), objs.len(), "ids are unique");
    for kind in ["index-pattern", "lens", "search", "dashboard"] {
        assert!(ids.iter().any(|(t, _)| t == kind), "some {kind}");
    }
    assert_eq!(objs.iter().filter(|o| o["type"] == "dashboard").count(), 5);
    for o in &objs {
        let refs = o["references"].as_array().unwrap();
        for r in refs {
            let key = (r["type"].as_str().unwrap().to_owned(), r["id"].as_str().unwrap().to_owned());
            assert!(ids.contains(&key), "{} refers to a missing {key:?}", o["id"]);
        }
        let names: BTreeSet<&str> = refs.iter().map(|r| r["name"].as_str().unwrap()).collect();
        if o["type"] == "dashboard" {
            let panels: Vec<Value> = serde_json::from_str(o["attributes"]["panelsJSON"].as_str().unwrap()).unwrap();
            assert!(!panels.is_empty());
            for p in panels {
                let name = format!("{}:{}", p["panelIndex"].as_str().unwrap(), p["panelRefName"].as_str().unwrap());
                assert!(names.contains(name.as_str()), "{}: panel {name} has no reference", o["id"]);
            }
        }
        if o["type"] == "lens" {
            for layer in o["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
                .as_object()
                .unwrap()
                .keys()
            {
                let name = format!("indexpattern-datasource-layer-{layer}");
                assert!(names.contains(name.as_str()), "{}: layer {layer} has no data view", o["id"]);
            }
        }
    }
}

/// Every field use the objects make that the templates do not allow; and how many were checked.
fn field_problems(objs: &[Value]) -> (Vec<String>, usize) {
    let views = data_view_fields(objs);
    let view_of = |o: &Value| -> String {
        o["references"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "index-pattern")
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut check = |view: &str, field: &str, what: &str, ok: &dyn Fn(&str) -> bool| {
        checked += 1;
        match views[view].get(field) {
            None => problems.push(format!("{what}: `{field}` is not in the template behind {view}")),
            Some(ty) if !ok(ty) => problems.push(format!("{what}: `{field}` is {ty} there")),
            Some(_) => {}
        }
    };
    // A data view's field formats (the alert table's answering links) name mapped fields.
    for o in objs.iter().filter(|o| o["type"] == "index-pattern") {
        let id = o["id"].as_str().unwrap();
        if let Some(map) = o["attributes"]["fieldFormatMap"].as_str() {
            let formats: Value = serde_json::from_str(map).unwrap();
            for field in formats.as_object().unwrap().keys() {
                check(id, field, &format!("{id} field format"), &|ty| ty == "keyword");
            }
        }
    }
    for o in objs {
        let id = o["id"].as_str().unwrap();
        let a = &o["attributes"];
        match o["type"].as_str().unwrap() {
            "index-pattern" => check(id, a["timeFieldName"].as_str().unwrap(), id, &|t| t == "date"),
            "lens" => {
                let view = view_of(o);
                let state = &a["state"];
                for layer in state["datasourceStates"]["formBased"]["layers"].as_object().unwrap().values() {
                    for (cid, c) in layer["columns"].as_object().unwrap() {
                        let op = c["operationType"].as_str().unwrap();
                        let field = c["sourceField"].as_str().unwrap();
                        if field != "___records___" {
                            check(&view, field, &format!("{id} column {cid} ({op})"), &|t| accepts(op, t));
                        }
                        if let Some(q) = c["filter"]["query"].as_str() {
                            for f in kql_fields(q) {
                                check(&view, &f, &format!("{id} column {cid} filter"), &|t| t != "text");
                            }
                        }
                    }
                }
                for f in kql_fields(state["query"]["query"].as_str().unwrap()) {
                    check(&view, &f, &format!("{id} query"), &|t| t != "text");
                }
            }
            "search" => {
                let view = view_of(o);
                for c in a["columns"].as_array().unwrap() {
                    check(&view, c.as_str().unwrap(), &format!("{id} column"), &|_| true);
                }
                for s in a["sort"].as_array().unwrap() {
                    check(&view, s[0].as_str().unwrap(), &format!("{id} sort"), &|t| {
                        t == "date" || NUMERIC.contains(&t)
                    });
                }
            }
            "dashboard" => {
                if let Some(cg) = a.get("controlGroupInput") {
                    let panels: Value = serde_json::from_str(cg["panelsJSON"].as_str().unwrap()).unwrap();
                    for (cid, p) in panels.as_object().unwrap() {
                        let input = &p["explicitInput"];
                        let ref_name = input["dataViewRefName"].as_str().unwrap();
                        let view = o["references"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|r| r["name"] == ref_name)
                            .map(|r| r["id"].as_str().unwrap().to_owned())
                            .unwrap_or_else(|| panic!("{id}: control {cid} has no data view reference"));
                        let field = input["fieldName"].as_str().unwrap();
                        check(&view, field, &format!("{id} control"), &|t| {
                            matches!(t, "keyword" | "ip" | "boolean")
                        });
                    }
                }
            }
            other => panic!("unexpected saved object type {other}"),
        }
    }
    (problems, checked)
}

#[test]
fn every_field_used_exists_in_the_templates_with_a_type_its_use_accepts() {
    let (problems, checked) = field_problems(&objects());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 80, "only {checked} fields were checked");
}

#[test]
fn the_field_check_catches_a_missing_field_and_a_wrong_type() {
    // The same check on the same objects with two deliberate mistakes: a column on a field no
    // template has, and a percentile of a keyword.
    let mut objs = objects();
    let lens = objs
        .iter_mut()
        .find(|o| o["id"] == "apiwatch-health-p95")
        .expect("the p95 visualization");
    let cols = &mut lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["l"]["columns"];
    cols["q"]["sourceField"] = "http.response.latency".into();
    cols["p"]["operationType"] = "percentile".into();
    let (problems, _) = field_problems(&objs);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`http.response.latency` is not in the template")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("`cloud.provider` is keyword")), "{problems:?}");
    assert!(!accepts("date_histogram", "long"));
    assert_eq!(
        kql_fields("http.response.status_code >= 500 and alert.status : \"open\""),
        ["http.response.status_code", "alert.status"]
    );
}
/// Field names a query or aggregation uses: keys of term/terms/range/match, `field` values,
/// sort keys and `_source` entries.
fn query_fields(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match k.as_str() {
                    "term" | "terms" | "range" | "match" => {
                        // A terms aggregation names its field under `field` (taken below).
                        if let Some(o) = x.as_object().filter(|o| !o.contains_key("field")) {
                            out.extend(o.keys().filter(|k| *k != "boost").cloned());
                        }
                    }
                    "field" => out.extend(x.as_str().map(str::to_owned)),
                    "sort" => {
                        for s in x.as_array().into_iter().flatten() {
                            out.extend(s.as_object().into_iter().flat_map(|o| o.keys().cloned()));
                        }
                    }
                    "_source" => out.extend(x.as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_owned))),
                    _ => {}
                }
                query_fields(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| query_fields(x, out)),
        _ => {}
    }
}

/// Fields of every index template whose pattern one of `indices` names.
fn fields_behind(indices: &[String]) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for f in std::fs::read_dir(repo_root().join("es-templates/index")).unwrap() {
        let t: Value = serde_json::from_str(&std::fs::read_to_string(f.unwrap().path()).unwrap()).unwrap();
        if t["index_patterns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| indices.iter().any(|i| p == i.as_str()))
        {
            for c in t["composed_of"].as_array().unwrap() {
                let c = c.as_str().unwrap();
                if c.ends_with("-mappings") {
                    fields.extend(template_fields(c));
                }
            }
        }
    }
    fields
}

#[test]
fn watchers_and_rules_use_only_fields_the_templates_map() {
    let dir = repo_root().join("kibana");
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut check = |what: String, indices: Vec<String>, used: Vec<String>| {
        let fields = fields_behind(&indices);
        assert!(!fields.is_empty(), "{what}: no template behind {indices:?}");
        for f in used {
            checked += 1;
            if !fields.contains_key(&f) {
                problems.push(format!("{what}: `{f}` is not in the templates behind {indices:?}"));
            }
        }
    };
    let mut watchers = 0;
    for f in std::fs::read_dir(dir.join("watchers")).unwrap() {
        let path = f.unwrap().path();
        let w: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in ["trigger", "input", "condition", "actions"] {
            assert!(w.get(key).is_some(), "{}: no {key}", path.display());
        }
        let req = &w["input"]["search"]["request"];
        let indices: Vec<String> = serde_json::from_value(req["indices"].clone()).unwrap();
        let mut used = Vec::new();
        query_fields(&req["body"], &mut used);
        assert!(!used.is_empty());
        check(path.display().to_string(), indices, used);
        watchers += 1;
    }
    assert_eq!(watchers, 3);
    let rules: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("rules/apiwatch-rules.json")).unwrap()).unwrap();
    assert_eq!(rules.len(), 3);
    for r in &rules {
        let p = &r["params"];
        assert_eq!(r["rule_type_id"], ".es-query");
        let indices: Vec<String> = serde_json::from_value(p["index"].clone()).unwrap();
        let query: Value = serde_json::from_str(p["esQuery"].as_str().unwrap()).unwrap();
        let mut used = vec![p["timeField"].as_str().unwrap().to_owned()];
        query_fields(&query, &mut used);
        check(r["name"].to_string(), indices, used);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 20, "only {checked} fields checked");
}
