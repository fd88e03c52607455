//! A route table of `n` rules as a large VirtualService makes them: each rule a path prefix
//! and a header match, forwarding to a subset. Shared by the resolve benchmark and the
//! allocation test, so both measure the same table.

use std::collections::BTreeMap;

use weft_api::route::{CompiledTable, RequestHead, RouteTable};

pub const FQDN: &str = "reviews.default.svc.cluster.local";

pub fn table(n: usize) -> CompiledTable {
    let rules: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "origin": {"kind": "VirtualService", "namespace": "default", "name": "reviews"},
                "index": i,
                "matches": [{
                    "path": {"prefix": {"value": format!("/api/v{i}/")}},
                    "headers": [{"name": "x-tenant", "value": {"exact": format!("tenant-{i}")}}],
                }],
                "action": {"forward": [
                    {"service": FQDN, "subset": "v1", "weight": 90},
                    {"service": FQDN, "subset": "v2", "weight": 10},
                ]},
                "policies": {"timeout_ms": 2000},
            })
        })
        .collect();
    let table: RouteTable =
        serde_json::from_value(serde_json::json!({ "rules": rules })).expect("a route table");
    CompiledTable::compile(&table, FQDN).expect("compiles")
}

/// A request for rule `i`'s path and tenant.
pub struct Request {
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

pub fn request_for(i: usize) -> Request {
    Request {
        path: format!("/api/v{i}/books/1"),
        headers: BTreeMap::from([("x-tenant".to_string(), format!("tenant-{i}"))]),
    }
}

impl Request {
    pub fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: "GET",
            path: &self.path,
            query: None,
            authority: "reviews",
            port: 9080,
            headers: &self.headers,
        }
    }
}
