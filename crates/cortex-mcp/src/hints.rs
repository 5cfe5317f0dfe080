//! What a service says about its tools in `tools/list`: which ones are safe to call
//! again after a failure that leaves their outcome unknown.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwapOption;
use rmcp::model::Tool;

/// The tools a service annotates `readOnlyHint: true` or `idempotentHint: true`, as
/// of the last `tools/list` the client saw. Read on every failed attempt (and on
/// every call when hedging is on): one atomic load and a hash lookup.
#[derive(Debug, Default)]
pub(crate) struct ToolHints {
    /// None until a listing has been seen.
    repeatable: ArcSwapOption<HashSet<String>>,
    /// Set while a background refresh is under way, so there is at most one.
    refreshing: AtomicBool,
}

impl ToolHints {
    /// Replace what is known with this listing.
    pub(crate) fn learn(&self, tools: &[Tool]) {
        let repeatable = tools
            .iter()
            .filter(|t| is_repeatable(t))
            .map(|t| t.name.to_string())
            .collect();
        self.repeatable.store(Some(Arc::new(repeatable)));
    }

    /// The service offers no tools (it did not declare the capability).
    pub(crate) fn learn_none(&self) {
        self.repeatable.store(Some(Arc::default()));
    }

    /// Whether a listing has been seen.
    pub(crate) fn known(&self) -> bool {
        self.repeatable.load().is_some()
    }

    /// Whether the service declared `tool` safe to repeat. A tool not (yet) known is not.
    pub(crate) fn repeatable(&self, tool: &str) -> bool {
        self.repeatable
            .load()
            .as_ref()
            .is_some_and(|set| set.contains(tool))
    }

    /// Claim the one background refresh; false if one is under way.
    pub(crate) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// `readOnlyHint` (no effect on its environment) or `idempotentHint` (a repeat has no
/// further effect): either way a second run does no harm. Both default to false.
fn is_repeatable(tool: &Tool) -> bool {
    tool.annotations
        .as_ref()
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ToolAnnotations;

    fn tool(name: &str, read_only: Option<bool>, idempotent: Option<bool>) -> Tool {
        let mut annotations = ToolAnnotations::new();
        annotations.read_only_hint = read_only;
        annotations.idempotent_hint = idempotent;
        Tool::new(name.to_owned(), "", Arc::default()).with_annotations(annotations)
    }

    #[test]
    fn only_tools_annotated_read_only_or_idempotent_are_repeatable() {
        let hints = ToolHints::default();
        assert!(!hints.known() && !hints.repeatable("read"), "unknown: not");
        hints.learn(&[
            tool("read", Some(true), None),
            tool("put", Some(false), Some(true)),
            tool("send", Some(false), Some(false)),
            tool("plain", None, None),
            Tool::new("bare", "", Arc::default()),
        ]);
        assert!(hints.known());
        assert!(hints.repeatable("read") && hints.repeatable("put"));
        for not in ["send", "plain", "bare", "missing"] {
            assert!(!hints.repeatable(not), "{not}");
        }
        // A new listing replaces the old one.
        hints.learn(&[tool("send", None, Some(true))]);
        assert!(hints.repeatable("send") && !hints.repeatable("read"));
        hints.learn_none();
        assert!(hints.known() && !hints.repeatable("send"));
        assert!(hints.start_refresh() && !hints.start_refresh());
        hints.end_refresh();
        assert!(hints.start_refresh());
    }
}
