//! Reading SAML XML safely: no DTDs (so no external entities and no entity expansion), a
//! bound on nodes and nesting, and element lookups that always check the namespace.

use roxmltree::{Document, Node, ParsingOptions};

/// SAML 2.0 protocol namespace.
pub const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
/// SAML 2.0 assertion namespace.
pub const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// SAML 2.0 metadata namespace.
pub const METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
/// XML Signature namespace.
pub const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Most nodes in one document: a real response has a few hundred; metadata aggregates of
/// a whole federation are refused too (configure the IdP's own metadata).
const MAX_NODES: u32 = 200_000;
/// Deepest element nesting: SAML documents are about 8 deep.
const MAX_DEPTH: usize = 32;

/// Why a document was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// It declares a DTD (DOCTYPE): never needed by SAML, the carrier of XXE and entity bombs.
    #[error("the document declares a DTD")]
    Doctype,
    /// Not well-formed, too many nodes, or nested too deep.
    #[error("not well-formed XML, too many nodes, or nested too deep")]
    Malformed,
}

/// Parses `text` with DTDs refused and bounded size and depth.
pub fn parse(text: &str) -> Result<Document<'_>, XmlError> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => XmlError::Doctype,
        _ => XmlError::Malformed,
    })?;
    if too_deep(doc.root_element()) {
        return Err(XmlError::Malformed);
    }
    Ok(doc)
}

fn too_deep(root: Node<'_, '_>) -> bool {
    // Iterative walk: the bound is what this check enforces, so it must not recurse itself.
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return true;
        }
        stack.extend(
            node.children()
                .filter(Node::is_element)
                .map(|c| (c, depth + 1)),
        );
    }
    false
}

/// Is `node` the element `ns:name`?
pub fn is(node: &Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().name() == name && node.tag_name().namespace() == Some(ns)
}

/// The first child element `ns:name`.
pub fn child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(c, ns, name))
}

/// Every child element `ns:name`.
pub fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| is(c, ns, name))
}

/// The element's whole text: every text node below it, joined, then trimmed. A comment
/// inside a value splits it into two text nodes; reading only the first would turn
/// `alice@corp.test<!---->.evil.test` into `alice@corp.test`.
pub fn text(node: Node<'_, '_>) -> String {
    let joined: String = node
        .descendants()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect();
    joined.trim().to_string()
}

/// Does the element hold a comment anywhere below it?
pub fn has_comment(node: Node<'_, '_>) -> bool {
    node.descendants().any(|n| n.is_comment())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctype_is_refused_before_any_entity_is_read() {
        let xxe = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert_eq!(parse(xxe).err(), Some(XmlError::Doctype));
        let bomb = r#"<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>"#;
        assert_eq!(parse(bomb).err(), Some(XmlError::Doctype));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse(&deep).err(), Some(XmlError::Malformed));
        let fine = format!("{}{}", "<a>".repeat(20), "</a>".repeat(20));
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn text_reads_across_comments() {
        let doc = parse("<n>alice@corp.test<!---->.evil.test</n>").expect("parses");
        assert_eq!(text(doc.root_element()), "alice@corp.test.evil.test");
        assert!(has_comment(doc.root_element()));
    }

    #[test]
    fn lookups_check_the_namespace() {
        let doc = parse(r#"<r xmlns:a="urn:a" xmlns:b="urn:b"><b:x/><a:x/></r>"#).expect("parses");
        let found = child(doc.root_element(), "urn:a", "x").expect("a:x");
        assert_eq!(found.tag_name().namespace(), Some("urn:a"));
        assert_eq!(children(doc.root_element(), "urn:c", "x").count(), 0);
    }
}
