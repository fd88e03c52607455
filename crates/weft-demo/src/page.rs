//! The product page's HTML: one self-contained document (inline CSS, no external assets).

use std::fmt::Write as _;

use http::HeaderMap;
use serde_json::Value;

use crate::client::CallError;
use crate::APP_HEADER;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#23395d;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}
header a{color:#cfe0ff}
main{max-width:960px;margin:24px auto;display:grid;grid-template-columns:1fr 1fr;gap:24px;padding:0 16px}
section{background:#fff;border-radius:8px;padding:16px 20px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.3em;margin:0}h2{font-size:1.1em;margin-top:0}
dl{display:grid;grid-template-columns:auto 1fr;gap:4px 12px}dt{font-weight:600}
blockquote{margin:0 0 16px 0;padding-left:12px;border-left:3px solid #ccd}
.who{color:#555;font-size:.9em}.served{font-size:.85em;color:#456;background:#eef3fb;padding:4px 8px;border-radius:4px;display:inline-block;margin-bottom:12px}
.stars{font-size:1.3em;letter-spacing:2px}.stars.black{color:#111}.stars.red{color:#d11}
.error{color:#a40000;background:#fff0f0;padding:8px;border-radius:4px}
";

/// The whole page: user bar, details section, reviews section. A failed call fills its own
/// section with the error; the page itself always renders.
pub(crate) fn render(
    user: Option<&str>,
    details: &Result<(Value, HeaderMap), CallError>,
    reviews: &Result<(Value, HeaderMap), CallError>,
) -> String {
    let mut out = String::with_capacity(4096);
    let title = details
        .as_ref()
        .ok()
        .and_then(|(d, _)| d["title"].as_str())
        .unwrap_or(crate::apps::TITLE);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · Weft Bookinfo</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    );
    let login = match user {
        Some(u) => format!(
            "signed in as <b class=\"user\">{}</b> · <a href=\"?u=\">sign out</a>",
            esc(u)
        ),
        None => "<a href=\"?u=jason\">sign in as jason</a>".to_string(),
    };
    let _ = write!(
        out,
        "<header><h1>Weft Bookinfo: {}</h1><span>{login}</span></header>\n<main>\n",
        esc(title)
    );
    render_details(&mut out, details);
    render_reviews(&mut out, reviews);
    out.push_str("</main></body></html>\n");
    out
}

fn render_details(out: &mut String, details: &Result<(Value, HeaderMap), CallError>) {
    out.push_str("<section id=\"details\"><h2>Book details</h2>\n");
    match details {
        Ok((d, headers)) => {
            served_by(out, headers, None);
            out.push_str("<dl>");
            for (label, key) in [
                ("Author", "author"),
                ("Year", "year"),
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            ] {
                if let Some(v) = scalar(&d[key]) {
                    let _ = write!(out, "<dt>{label}</dt><dd>{}</dd>", esc(&v));
                }
            }
            out.push_str("</dl>\n");
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "<p class=\"error\">Error fetching product details: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    out.push_str("</section>\n");
}

fn render_reviews(out: &mut String, reviews: &Result<(Value, HeaderMap), CallError>) {
    out.push_str("<section id=\"reviews\"><h2>Book reviews</h2>\n");
    match reviews {
        Ok((r, headers)) => {
            let version = r["version"].as_str();
            served_by(out, headers, r["podname"].as_str());
            if r["ratings"].as_str() == Some("unavailable") {
                out.push_str("<p class=\"error\">Ratings service is currently unavailable</p>\n");
            }
            let empty = Vec::new();
            let list = r["reviews"].as_array().unwrap_or(&empty);
            for review in list.iter().take(16) {
                let text = review["text"].as_str().unwrap_or_default();
                let who = review["reviewer"].as_str().unwrap_or("anonymous");
                let _ = write!(
                    out,
                    "<blockquote><p>{}</p><div class=\"who\">— {}</div>",
                    esc(text),
                    esc(who)
                );
                let rating = &review["rating"];
                if let Some(stars) = rating["stars"].as_u64() {
                    let stars = stars.min(5) as usize;
                    let color = match rating["color"].as_str() {
                        Some("red") => "red",
                        _ => "black",
                    };
                    let _ = write!(
                        out,
                        "<div class=\"stars {color}\" title=\"{stars} of 5, {color} stars\">{}{}</div>",
                        "★".repeat(stars),
                        "☆".repeat(5 - stars)
                    );
                } else if let Some(err) = rating["error"].as_str() {
                    let _ = write!(out, "<div class=\"error\">{}</div>", esc(err));
                }
                out.push_str("</blockquote>\n");
            }
            if version == Some("v1") {
                out.push_str("<p class=\"who\">reviews v1 shows no ratings</p>\n");
            }
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "<p class=\"error\">Reviews unavailable: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    out.push_str("</section>\n");
}

/// "served by reviews-v2 (pod reviews-v2-1234)": the app header of the answer.
fn served_by(out: &mut String, headers: &HeaderMap, pod: Option<&str>) {
    let app = headers
        .get(APP_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let pod = pod.map(|p| format!(" (pod {})", esc(p))).unwrap_or_default();
    let _ = writeln!(
        out,
        "<div class=\"served\">served by <b class=\"app\">{}</b>{pod}</div>",
        esc(app)
    );
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// HTML-escapes text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
