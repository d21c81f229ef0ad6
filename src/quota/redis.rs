//! Quota counts in Redis, shared by every gateway of a fleet.
//!
//! Each reserve and each reconcile is **one Lua script**, so the check and the charge are atomic
//! across instances: two gateways can never both take the last unit. Per model there are two keys,
//! with a hash tag so that both land on the same cluster slot:
//!
//! * `<prefix>:{<engine>/<model>}:leases`, a sorted set of the calls in flight (member: lease id,
//!   score: the lease's expiry in ms). A lease never released (an instance crashed) drops out at
//!   its expiry, and the key itself expires when the last lease would have;
//! * `<prefix>:{<engine>/<model>}:window`, a hash of one-second buckets over the last 60 s:
//!   `r<second>` requests and `t<second>` tokens. Old buckets are deleted as they leave the window,
//!   and the key expires 61 s after its last write;
//! * `<prefix>:{<engine>/<model>}:parked`, set for as long as the provider asked us to back off
//!   after a 429, so that every instance refuses at once instead of sending doomed calls.
//!
//! Time is Redis' `TIME`, so instances with skewed clocks still agree on the window. The
//! connection is made lazily and re-made by the connection manager; every call is bounded by
//! `AIGW_QUOTA__REDIS_TIMEOUT_MS`, so a Redis that hangs costs at most that before the actor falls
//! back (fail-open) or refuses (fail-closed).

use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::quota::{
    BackendError, Dimension, QuotaBackend, ReconcileArgs, ReserveArgs, Verdict, View, WINDOW_S,
};
use futures::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::config::QuotaConfig;

/// Shared by the reconcile and peek scripts: the usage view, as `{in_flight, requests, tokens}`.
const VIEW_LUA: &str = r#"
local function view(now, sec, win)
  local inflight = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
  local oldest = sec - win + 1
  local reqs, toks = 0, 0
  local h = redis.call('HGETALL', KEYS[2])
  for i = 1, #h, 2 do
    local f = h[i]
    local s = tonumber(string.sub(f, 2))
    if s >= oldest then
      if string.sub(f, 1, 1) == 'r' then reqs = reqs + tonumber(h[i + 1])
      else toks = toks + tonumber(h[i + 1]) end
    end
  end
  return {inflight, reqs, toks}
end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// KEYS: leases, window, parked. ARGV: max_concurrent, requests_per_minute, tokens_per_minute (-1:
/// unlimited), tokens, lease id, lease ttl ms, force (1/0), window seconds.
/// Returns {admitted, dimension (0 none, 1 concurrency, 2 requests, 3 tokens, 4 parked), retry ms,
/// in_flight, requests, tokens, bucket second}.
const RESERVE_LUA: &str = r#"
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxc, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, lease, ttl = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local force, win = ARGV[7] == '1', tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local inflight = redis.call('ZCARD', KEYS[1])
local oldest = sec - win + 1
local rb, tb = {}, {}
local reqs, toks = 0, 0
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do
  local f = h[i]
  local s = tonumber(string.sub(f, 2))
  local v = tonumber(h[i + 1])
  if s < oldest then
    redis.call('HDEL', KEYS[2], f)
  elseif string.sub(f, 1, 1) == 'r' then
    reqs = reqs + v
    rb[s] = v
  else
    toks = toks + v
    tb[s] = v
  end
end
local function freed_after(b, need)
  local freed = 0
  for s = oldest, sec do
    freed = freed + (b[s] or 0)
    if freed >= need then return (s + win) * 1000 - now end
  end
  return win * 1000
end
local dim, retry = 0, 0
local parked = redis.call('PTTL', KEYS[3])
if parked > 0 then
  dim = 4
  retry = parked
elseif maxc >= 0 and inflight >= maxc then
  dim = 1
elseif rpm >= 0 and reqs + 1 > rpm then
  dim = 2
  retry = freed_after(rb, reqs + 1 - rpm)
elseif tpm >= 0 and toks + tokens > tpm then
  dim = 3
  retry = freed_after(tb, toks + tokens - tpm)
end
if dim ~= 0 and not force then
  return {0, dim, retry, inflight, reqs, toks, sec}
end
redis.call('ZADD', KEYS[1], now + ttl, lease)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('HINCRBY', KEYS[2], 'r' .. sec, 1)
if tokens > 0 then redis.call('HINCRBY', KEYS[2], 't' .. sec, tokens) end
redis.call('PEXPIRE', KEYS[2], (win + 1) * 1000)
return {1, dim, 0, inflight + 1, reqs + 1, toks + tokens, sec}
"#;

/// KEYS: leases, window. ARGV: lease id, bucket second, token delta, window seconds.
/// Returns {in_flight, requests, tokens}.
const RECONCILE_LUA: &str = r#"
local lease, bucket, delta, win = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREM', KEYS[1], lease)
if delta ~= 0 and bucket >= sec - win + 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  local f = 't' .. bucket
  local v = redis.call('HINCRBY', KEYS[2], f, delta)
  if v < 0 then redis.call('HSET', KEYS[2], f, 0) end
end
return view(now, sec, win)
"#;

/// KEYS: parked. ARGV: milliseconds. Extends the parking, never shortens it.
const PARK_LUA: &str = r#"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"#;

/// KEYS: leases, window. ARGV: window seconds. Returns {in_flight, requests, tokens}.
const PEEK_LUA: &str = r#"
return view(now, sec, tonumber(ARGV[1]))
"#;

/// The connection and the scripts, shared by every model.
pub struct RedisStore {
    conn: ConnectionManager,
    reserve: Script,
    reconcile: Script,
    peek: Script,
    park: Script,
    timeout: Duration,
    prefix: String,
}

impl RedisStore {
    /// A store for `AIGW_QUOTA__REDIS_URL`; connects on first use.
    pub fn new(config: &QuotaConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| format!("AIGW_QUOTA__REDIS_URL: {e}"))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| format!("AIGW_QUOTA__REDIS_URL: {e}"))?;
        Ok(Self {
            conn,
            reserve: Script::new(RESERVE_LUA),
            reconcile: Script::new(&format!("{VIEW_LUA}{RECONCILE_LUA}")),
            peek: Script::new(&format!("{VIEW_LUA}{PEEK_LUA}")),
            park: Script::new(PARK_LUA),
            timeout,
            prefix: config.key_prefix.clone(),
        })
    }
}

/// One model's counts in a [`RedisStore`].
pub struct RedisBackend {
    store: Arc<RedisStore>,
    leases: String,
    window: String,
    parked: String,
}

impl RedisBackend {
    /// The keys of `engine`/`model`.
    pub fn new(store: Arc<RedisStore>, engine: &str, model: &str) -> Self {
        // Braces would break the hash tag.
        let tag = format!("{engine}/{model}").replace(['{', '}'], "_");
        let base = format!("{}:{{{tag}}}", store.prefix);
        Self {
            leases: format!("{base}:leases"),
            window: format!("{base}:window"),
            parked: format!("{base}:parked"),
            store,
        }
    }

    /// The key names (leases, window, parked), for tests and operators.
    pub fn keys(&self) -> [&str; 3] {
        [&self.leases, &self.window, &self.parked]
    }
}

fn limit_arg(limit: Option<u64>) -> i64 {
    limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1)
}

fn view_of(values: &[i64]) -> Result<View, BackendError> {
    match values {
        [in_flight, requests, tokens, ..] => Ok(View {
            in_flight: (*in_flight).max(0) as u64,
            requests: (*requests).max(0) as u64,
            tokens: (*tokens).max(0) as u64,
        }),
        _ => Err(BackendError(format!("unexpected script answer {values:?}"))),
    }
}

async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BackendError(e.to_string())),
        Err(_) => Err(BackendError(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

impl QuotaBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn reserve(&self, args: ReserveArgs) -> BoxFuture<'static, Result<Verdict, BackendError>> {
        let store = Arc::clone(&self.store);
        let (leases, window) = (self.leases.clone(), self.window.clone());
        let parked = self.parked.clone();
        async move {
            let mut conn = store.conn.clone();
            let mut invocation = store.reserve.key(&leases);
            invocation
                .key(&window)
                .key(&parked)
                .arg(limit_arg(args.limits.max_concurrent))
                .arg(limit_arg(args.limits.requests_per_minute))
                .arg(limit_arg(args.limits.tokens_per_minute))
                .arg(args.tokens)
                .arg(&args.lease)
                .arg(args.lease_ttl.as_millis() as u64)
                .arg(if args.force { 1 } else { 0 })
                .arg(WINDOW_S);
            let values: Vec<i64> =
                bounded(store.timeout, invocation.invoke_async(&mut conn)).await?;
            let [admitted, dim, retry, in_flight, requests, tokens, bucket] = values[..] else {
                return Err(BackendError(format!("unexpected script answer {values:?}")));
            };
            let view = View {
                in_flight: in_flight.max(0) as u64,
                requests: requests.max(0) as u64,
                tokens: tokens.max(0) as u64,
            };
            let dimension = match dim {
                1 => Some(Dimension::Concurrency),
                2 => Some(Dimension::Requests),
                3 => Some(Dimension::Tokens),
                4 => Some(Dimension::Upstream),
                _ => None,
            };
            Ok(if admitted == 1 {
                Verdict::Admitted {
                    bucket: bucket.max(0) as u64,
                    view,
                    would_refuse: dimension,
                }
            } else {
                Verdict::Refused {
                    dimension: dimension.unwrap_or(Dimension::Concurrency),
                    retry_after: Duration::from_millis(retry.max(0) as u64),
                    view,
                }
            })
        }
        .boxed()
    }

    fn reconcile(&self, args: ReconcileArgs) -> BoxFuture<'static, Result<View, BackendError>> {
        let store = Arc::clone(&self.store);
        let (leases, window) = (self.leases.clone(), self.window.clone());
        async move {
            let mut conn = store.conn.clone();
            let mut invocation = store.reconcile.key(&leases);
            invocation
                .key(&window)
                .arg(&args.lease)
                .arg(args.bucket)
                .arg(args.delta_tokens)
                .arg(WINDOW_S);
            let values: Vec<i64> =
                bounded(store.timeout, invocation.invoke_async(&mut conn)).await?;
            view_of(&values)
        }
        .boxed()
    }

    fn park(&self, duration: Duration) -> BoxFuture<'static, Result<(), BackendError>> {
        let store = Arc::clone(&self.store);
        let parked = self.parked.clone();
        async move {
            let mut conn = store.conn.clone();
            let mut invocation = store.park.key(&parked);
            invocation.arg(duration.as_millis().max(1) as u64);
            let _: i64 = bounded(store.timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(())
        }
        .boxed()
    }

    fn peek(&self) -> BoxFuture<'static, Result<View, BackendError>> {
        let store = Arc::clone(&self.store);
        let (leases, window) = (self.leases.clone(), self.window.clone());
        async move {
            let mut conn = store.conn.clone();
            let mut invocation = store.peek.key(&leases);
            invocation.key(&window).arg(WINDOW_S);
            let values: Vec<i64> =
                bounded(store.timeout, invocation.invoke_async(&mut conn)).await?;
            view_of(&values)
        }
        .boxed()
    }
}
