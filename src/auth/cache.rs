//! The verified-token cache.
//!
//! GitLab instances and IDEs send the same token with every request for up to an hour, and an RSA
//! signature check is by far the most expensive step of authentication. A token that verified
//! once is remembered by its SHA-256 (the token itself is never stored), with its claims, until
//! the earlier of its `exp` and a maximum age; so a repeated token costs a hash and a map lookup.
//!
//! Bounded: at `capacity` entries, expired entries are dropped first and, if that is not enough,
//! an arbitrary tenth of the rest (the cache is an optimisation; a dropped entry only costs one
//! more signature check). Only tokens that passed every check are cached, so a failed token is
//! checked again on every attempt (and cannot evict good entries faster than it is refused).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::user::Claims;

/// Upper bound on how long a verified token is trusted without another signature check, so
/// that a key withdrawn from the issuer's JWKS stops working within this time.
pub const MAX_AGE: Duration = Duration::from_secs(300);

struct Entry {
    claims: Arc<Claims>,
    /// Seconds since the epoch after which the entry is no longer valid.
    valid_until: f64,
}

/// The cache (see the module docs).
pub struct TokenCache {
    map: DashMap<[u8; 32], Entry>,
    capacity: usize,
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The cache key of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
        }
    }

    /// Whether the cache is enabled.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The claims of a previously verified, still valid token.
    pub fn get(&self, hash: &[u8; 32]) -> Option<Arc<Claims>> {
        if !self.enabled() {
            return None;
        }
        let now = now_epoch();
        let hit = self.map.get(hash).map(|e| {
            if now < e.valid_until {
                Some(Arc::clone(&e.claims))
            } else {
                None
            }
        })?;
        if hit.is_none() {
            self.map.remove(hash);
        }
        hit
    }

    /// Remember a verified token's claims, never past `exp` (seconds since the epoch).
    pub fn insert(&self, hash: [u8; 32], claims: Arc<Claims>, exp: Option<f64>) {
        if !self.enabled() {
            return;
        }
        let now = now_epoch();
        let valid_until = exp
            .unwrap_or(f64::INFINITY)
            .min(now + MAX_AGE.as_secs_f64());
        if valid_until <= now {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map.retain(|_, e| e.valid_until > now);
        }
        if self.map.len() >= self.capacity {
            let drop_n = (self.capacity / 10).max(1);
            let victims: Vec<[u8; 32]> = self.map.iter().take(drop_n).map(|e| *e.key()).collect();
            for v in victims {
                self.map.remove(&v);
            }
        }
        self.map.insert(
            hash,
            Entry {
                claims,
                valid_until,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_until_exp_and_stays_bounded() {
        let cache = TokenCache::new(10);
        let claims = Arc::new(Claims::default());
        let now = now_epoch();
        cache.insert(token_hash("a"), Arc::clone(&claims), Some(now + 60.0));
        assert!(cache.get(&token_hash("a")).is_some());
        cache.insert(token_hash("b"), Arc::clone(&claims), Some(now - 1.0));
        assert!(
            cache.get(&token_hash("b")).is_none(),
            "expired never cached"
        );
        for i in 0..100 {
            cache.insert(
                token_hash(&i.to_string()),
                Arc::clone(&claims),
                Some(now + 60.0),
            );
        }
        assert!(cache.len() <= 10);
        let off = TokenCache::new(0);
        off.insert(token_hash("a"), claims, None);
        assert!(off.get(&token_hash("a")).is_none());
    }
}
