//! `/v1/search/gitlab-docs` (spec 3.8): the original's `SearchRequest`.
//!
//! ```text
//! {"type": str ≤100, "metadata": {"source": str ≤100, "version": str ≤100},
//!  "payload": {"query": str ≤400 000, "page_size": 1 ≤ int ≤ 20 = 4}}
//! ```

use serde_json::Value;

use super::{Errors, Loc, Str};

/// A validated search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// The caller's label for the search (not used to route it).
    pub r#type: String,
    /// Who asks (`gitlab-rails-sm`, ...).
    pub source: String,
    /// The caller's GitLab version; picks the documentation data store.
    pub version: String,
    /// What to look for.
    pub query: String,
    /// Results wanted.
    pub page_size: i64,
}

/// `page_size` bounds and default.
const PAGE_SIZE: (i64, i64, i64) = (1, 20, 4);

fn read_page_size(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<i64> {
    let (min, max, _) = PAGE_SIZE;
    let n = e.int(v, l);
    e.bounded(n, v, l, (min, Value::from(min)), (max, Value::from(max)))
}

/// Validate a body as the original's `SearchRequest`: every failing field reported, in
/// declaration order, as pydantic does.
pub fn parse_search_request(body: &Value) -> Result<SearchRequest, Vec<Value>> {
    let mut e = Errors::new();
    let loc = Loc::root("body");
    let Some(f) = e.model(body, &loc) else {
        return Err(e.into_values());
    };
    let r#type = e.required(f, "type", &loc, |e, v, l| e.string(v, l, Str::max(100)));
    let metadata = e.required(f, "metadata", &loc, |e, v, l| {
        let m = e.model(v, l)?;
        let source = e.required(m, "source", l, |e, v, l| e.string(v, l, Str::max(100)));
        let version = e.required(m, "version", l, |e, v, l| e.string(v, l, Str::max(100)));
        Some((source?, version?))
    });
    let payload = e.required(f, "payload", &loc, |e, v, l| {
        let p = e.model(v, l)?;
        let query = e.required(p, "query", l, |e, v, l| e.string(v, l, Str::max(400_000)));
        let page_size = e.defaulted(p, "page_size", l, PAGE_SIZE.2, read_page_size);
        Some((query?, page_size?))
    });
    match (r#type, metadata, payload) {
        (Some(r#type), Some((source, version)), Some((query, page_size))) if e.is_empty() => {
            Ok(SearchRequest {
                r#type,
                source,
                version,
                query,
                page_size,
            })
        }
        _ => Err(e.into_values()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(payload: Value) -> Value {
        json!({"type": "search-docs", "metadata": {"source": "GitLab EE", "version": "17.0.0"},
               "payload": payload})
    }

    #[test]
    fn a_valid_body_gets_the_default_page_size() {
        let r = parse_search_request(&body(json!({"query": "how do I rebase"}))).unwrap();
        assert_eq!(
            r,
            SearchRequest {
                r#type: "search-docs".into(),
                source: "GitLab EE".into(),
                version: "17.0.0".into(),
                query: "how do I rebase".into(),
                page_size: 4,
            }
        );
        let r = parse_search_request(&body(json!({"query": "x", "page_size": "20"}))).unwrap();
        assert_eq!(r.page_size, 20);
    }

    #[test]
    fn every_failing_field_is_reported_as_pydantic_does() {
        let err = parse_search_request(&json!({"type": "t", "metadata": {"source": "s"},
            "payload": {"page_size": 0}}))
        .unwrap_err();
        assert_eq!(
            Value::Array(err),
            json!([
                {"type": "missing", "loc": ["body", "metadata", "version"], "msg": "Field required",
                 "input": {"source": "s"}},
                {"type": "missing", "loc": ["body", "payload", "query"], "msg": "Field required",
                 "input": {"page_size": 0}},
                {"type": "greater_than_equal", "loc": ["body", "payload", "page_size"],
                 "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}}
            ])
        );
        let err = parse_search_request(&body(json!({"query": "x", "page_size": 21}))).unwrap_err();
        assert_eq!(
            Value::Array(err),
            json!([{"type": "less_than_equal", "loc": ["body", "payload", "page_size"],
                    "msg": "Input should be less than or equal to 20", "input": 21, "ctx": {"le": 20}}])
        );
        let err =
            parse_search_request(&json!({"type": "t".repeat(101), "metadata": {"source": "s",
            "version": "v"}, "payload": {"query": 1}}))
            .unwrap_err();
        let kinds: Vec<&str> = err.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["string_too_long", "string_type"]);
        let err = parse_search_request(&json!([])).unwrap_err();
        assert_eq!(err[0]["type"], "model_attributes_type");
    }
}
