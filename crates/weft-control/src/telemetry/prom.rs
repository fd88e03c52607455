//! A reader for the Prometheus / OpenMetrics text the sidecars serve: samples only (comments,
//! `# TYPE` and `# EOF` are skipped), label values unescaped.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A line that is not a sample.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("metrics line {line}: {reason}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// Every sample of `text`, in order.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if rest.starts_with('{') {
            rest = parse_labels(&rest[1..], &mut labels).map_err(|r| err(&r))?;
        }
        // The value, then an optional timestamp.
        let value = rest.split_whitespace().next().ok_or_else(|| err("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .map_err(|_| err(&format!("value {v:?} is not a number")))?,
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Reads `k="v",...}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without '='")?;
        let key = s[..eq].trim().to_string();
        let after = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unfinished escape".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        labels.insert(key, value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_special_values() {
        let text = "# HELP x Requests.\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\\\\\"} 5\nplain 2.5 1700000000\nh_bucket{le=\"+Inf\"} 3\ninf +Inf\n# EOF\n";
        let s = parse(text).expect("parses");
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels["a"], "1");
        assert_eq!(s[0].labels["b"], "q\"uote\\");
        assert_eq!(s[0].value, 5.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("plain", 2.5));
        assert_eq!(s[2].labels["le"], "+Inf");
        assert!(s[3].value.is_infinite());
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(parse("ok 1\nbad{a=\"x} 1\n").expect_err("an error").line, 2);
        assert!(parse("novalue\n").is_err());
        assert!(parse("x{a=1} 2\n")
            .expect_err("an error")
            .reason
            .contains("quotes"));
        assert!(parse("x NaNa\n")
            .expect_err("an error")
            .reason
            .contains("not a number"));
    }
}
