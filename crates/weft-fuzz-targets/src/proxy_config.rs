//! `proxy_config`: a `ProxyConfig` from YAML or JSON (`weft proxy --config FILE`), and from the
//! JSON a pushed resource carries.

use weft_api::proxy_config::ProxyConfig;

/// `data`: a config file's bytes, YAML or JSON.
pub fn proxy_config(data: &[u8]) {
    // A file that is not UTF-8 is refused before parsing; read it as the nearest text instead.
    let text = String::from_utf8_lossy(data);
    match ProxyConfig::from_yaml("fuzz.yaml", &text) {
        Ok(config) => {
            assert!(config.validate().is_empty(), "accepted, so valid");
            round_trips(&config);
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "refused without a reason");
            let _ = e.to_string();
        }
    }
    // The JSON reader the discovery stream uses for resource bodies.
    if let Ok(config) = serde_json::from_slice::<ProxyConfig>(data) {
        let _ = config.validate();
    }
}

/// A valid config survives JSON (what `/config_dump` prints and the discovery stream carries):
/// read back, it is the same config, and still valid.
fn round_trips(config: &ProxyConfig) {
    let json = match serde_json::to_string(config) {
        Ok(j) => j,
        Err(e) => panic!("a valid config serializes: {e}"),
    };
    match serde_json::from_str::<ProxyConfig>(&json) {
        Ok(again) => {
            assert!(again == *config, "{json} read back differently");
            assert!(again.validate().is_empty(), "{json} read back invalid");
        }
        Err(e) => panic!("a valid config, as JSON, is refused: {e}\n{json}"),
    }
}
