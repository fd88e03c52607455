//! Where a Gateway API rule's parts are, for the checks on the whole model.

use marked_yaml::{Node, Spanned};

use super::at;
use crate::resources::gateway_api::BackendRef;
use crate::resources::Document;
use crate::translate::core::{has_path_in, locate_in};
use crate::translate::{Part, Translated};

/// Where rule `index`, its backendRefs (numbered as the model numbers them: Service refs
/// only) and its regex values are, for the checks on the whole model.
pub(super) fn record_rule(
    doc: &Document,
    index: usize,
    backend_refs: &[Spanned<BackendRef>],
    out: &mut Translated,
) {
    let root = doc.node();
    let i = index.to_string();
    let rule = ["spec", "rules", i.as_str()];
    out.spans
        .record(doc, Part::Rule(index), locate_in(doc, &root, &rule));
    let refs = [&rule[..], &["backendRefs"]].concat();
    if has_path_in(&root, &refs) {
        out.spans
            .record(doc, Part::Routes(index), locate_in(doc, &root, &refs));
    }
    for (j, b) in backend_refs.iter().filter(|b| b.is_service()).enumerate() {
        out.spans
            .record(doc, Part::BackendHost(index, j), at(doc, b.span()));
    }
    // `type: RegularExpression` values under the rule's matches (path, headers, queryParams).
    let Some(matches) = root.as_mapping().and_then(|r| {
        r.get_mapping("spec")?
            .get_sequence("rules")?
            .get(index)?
            .as_mapping()?
            .get_sequence("matches")
    }) else {
        return;
    };
    let regexes = matches.iter().filter_map(|m| m.as_mapping()).flat_map(|m| {
        let path = m.get_mapping("path").into_iter();
        let lists = ["headers", "queryParams"]
            .into_iter()
            .filter_map(|k| m.get_sequence(k))
            .flat_map(|seq| seq.iter().filter_map(|v| v.as_mapping()));
        path.chain(lists)
    });
    for m in regexes {
        let is_regex = m
            .get_scalar("type")
            .is_some_and(|t| t.as_str() == "RegularExpression");
        let value = m.iter().find(|(k, _)| k.as_str() == "value");
        if let (true, Some((key, Node::Scalar(value)))) = (is_regex, value) {
            let at = doc.location_of(&Node::Scalar(key.clone()));
            out.spans
                .record(doc, Part::Regex(index, value.as_str().to_string()), at);
        }
    }
}
