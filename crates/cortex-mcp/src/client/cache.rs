//! The result cache of cacheable calls: what it holds, and how a call reads and fills it.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ReadResourceResult};

use super::{CallOptions, Inner};
use crate::Result;

#[derive(Debug, Clone)]
pub(super) enum Cached {
    Tool(Arc<CallToolResult>),
    Resource(Arc<ReadResourceResult>),
}

/// An answer the result cache can hold.
pub(super) trait Cacheable: Clone {
    fn wrap(self) -> Cached;
    fn unwrap(cached: &Cached) -> Option<Self>;
}

impl Cacheable for CallToolResult {
    fn wrap(self) -> Cached {
        Cached::Tool(Arc::new(self))
    }
    fn unwrap(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Tool(hit) => Some(Self::clone(hit)),
            Cached::Resource(_) => None,
        }
    }
}

impl Cacheable for ReadResourceResult {
    fn wrap(self) -> Cached {
        Cached::Resource(Arc::new(self))
    }
    fn unwrap(cached: &Cached) -> Option<Self> {
        match cached {
            Cached::Resource(hit) => Some(Self::clone(hit)),
            Cached::Tool(_) => None,
        }
    }
}

/// What the cache said about a call.
pub(super) enum Lookup<T> {
    /// The cached answer.
    Hit(T),
    /// Not there: the key to store the answer under, if the call is cacheable.
    Miss(Option<String>),
}

impl Inner {
    /// The cached answer of a cacheable call, or the key to store it under.
    pub(super) fn lookup<T: Cacheable>(
        &self,
        opts: &CallOptions,
        key: impl FnOnce() -> String,
    ) -> Lookup<T> {
        let (Some(cache), Some(_)) = (&self.cache, opts.cache) else {
            return Lookup::Miss(None);
        };
        let key = key();
        if let Some(hit) = cache.get(&key).as_ref().and_then(T::unwrap) {
            self.m.cache_hits.increment();
            return Lookup::Hit(hit);
        }
        self.m.cache_misses.increment();
        Lookup::Miss(Some(key))
    }

    /// Store a successful answer under `key` for the call's TTL.
    pub(super) fn remember<T: Cacheable>(
        &self,
        key: Option<String>,
        opts: &CallOptions,
        outcome: &Result<T>,
    ) {
        if let (Ok(answer), Some(key), Some(cache)) = (outcome, key, &self.cache) {
            let ttl = opts.cache.flatten().unwrap_or(self.config.cache_ttl);
            cache.insert_with_ttl(key, answer.clone().wrap(), ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_answer_comes_back_only_as_its_own_kind() {
        let tool = CallToolResult::success(vec![]);
        let cached = tool.clone().wrap();
        assert_eq!(CallToolResult::unwrap(&cached), Some(tool));
        assert!(ReadResourceResult::unwrap(&cached).is_none());
        let read = ReadResourceResult::new(vec![]);
        let cached = read.clone().wrap();
        assert_eq!(ReadResourceResult::unwrap(&cached), Some(read));
        assert!(CallToolResult::unwrap(&cached).is_none());
    }
}
