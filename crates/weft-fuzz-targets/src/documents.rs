//! `mesh_documents`: what `weft analyze` does with a file: YAML documents, translated into the
//! model, checked; findings out.

use weft_api::resources::{self, Loaded};
use weft_api::{translate, validate};

const FILE: &str = "fuzz.yaml";

/// `data`: one file of mesh documents (Istio, Linkerd, SMI, Gateway API, Weft's own).
pub fn mesh_documents(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut loaded = Loaded::default();
    resources::parse_file(FILE, &text, &mut loaded);
    let translated = translate::translate(&loaded.documents);
    let findings = validate::analyze(&loaded, &translated);

    // Every finding points into the file it is about (a `file:line:col` an editor can open).
    // Lines as YAML counts them: LF, CRLF or a lone CR ends one.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    for f in &findings {
        assert!(f.file.as_deref().is_none_or(|file| file == FILE), "{f}");
        if let Some(line) = f.line {
            assert!((1..=lines + 1).contains(&line), "line {line} of {lines}: {f}");
        }
        assert!(f.column != Some(0), "columns are 1-based: {f}");
        let _ = f.to_string();
    }
    // What `weft analyze -o json` prints.
    if let Err(e) = serde_json::to_string(&findings) {
        panic!("findings serialize: {e}");
    }
}
