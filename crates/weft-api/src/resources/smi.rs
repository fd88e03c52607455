//! `split.smi-spec.io` `TrafficSplit` (v1alpha1 to v1alpha4).

use std::fmt;

use marked_yaml::Spanned;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// `TrafficSplit.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSplitSpec {
    /// The root service clients call.
    pub service: String,
    #[serde(default)]
    pub backends: Vec<Spanned<SplitBackend>>,
    /// v1alpha3+: references to `HTTPRouteGroup`s (or `TCPRoute`s).
    #[serde(default)]
    pub matches: Vec<Spanned<serde_norway::Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitBackend {
    pub service: String,
    pub weight: Weight,
}

/// A weight in milli-units: v1alpha1 writes Kubernetes quantities (`900m`, `1`), later
/// versions integers; both are read as thousandths (`900m` = 900, `1` = 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight(pub u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Weight;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a weight: an integer or a quantity such as 900m")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                v.checked_mul(1000)
                    .and_then(|m| u32::try_from(m).ok())
                    .map(Weight)
                    .ok_or_else(|| E::custom(format!("weight {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("weight {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Weight, E> {
                quantity_milli(v)
                    .map(Weight)
                    .ok_or_else(|| E::custom(format!("weight {v:?} is not a quantity such as 900m or 1")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A non-negative Kubernetes quantity in thousandths: `900m` -> 900, `1` -> 1000,
/// `0.5` -> 500, `2k` -> 2_000_000. None when malformed, too precise or too large.
pub fn quantity_milli(text: &str) -> Option<u32> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    // Scale in thousandths per unit of the suffix.
    let scale: u128 = match suffix {
        "m" => 1,
        "" => 1_000,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "Ki" => 1_024_000,
        "Mi" => 1_048_576_000,
        "Gi" => 1_073_741_824_000,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let denom = 10u128.pow(frac.len() as u32);
    let numerator = (int * denom + frac_value).checked_mul(scale)?;
    if numerator % denom != 0 {
        return None; // finer than a thousandth
    }
    u32::try_from(numerator / denom).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_become_milli_units() {
        for (text, want) in [
            ("900m", Some(900)),
            ("100m", Some(100)),
            ("1", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("1.25", Some(1250)),
            ("50", Some(50_000)),
            ("2k", Some(2_000_000)),
            ("1Ki", Some(1_024_000)),
            ("0.0001", None),
            ("-1", None),
            ("abc", None),
            ("", None),
            ("5x", None),
            ("99999999", None),
        ] {
            assert_eq!(quantity_milli(text), want, "{text}");
        }
    }
}
