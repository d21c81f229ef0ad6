//! Frame markers: finding `t<i> ` in a streamed body, whatever its framing.
//!
//! The mock upstream gives delta `i` the text `t<i> ` (`t0 `, `t1 `, …). The gateway re-frames
//! those deltas in its own way (raw text, `event: content_chunk` SSE, Anthropic SSE passed
//! through, chunked or not), but the text itself survives every framing byte for byte. So the
//! driver does not parse any framing: it scans the decoded body bytes for the pattern
//!
//! ```text
//! <non-word byte or start of body> 't' <decimal digits, no leading zero> ' '
//! ```
//!
//! where a word byte is `[A-Za-z0-9_]`. The word boundary keeps ids such as `msg_01t5…`,
//! keys such as `"output_tokens":64` and `"text"` from matching, and the closing space keeps
//! numbers inside ids from matching. The scanner is a byte-at-a-time state machine that carries
//! its state across reads, so a marker split between two TCP reads or two HTTP chunks is still
//! found, timestamped with the read that completed it.
//!
//! [`FrameTracker`] checks the sequence: markers must arrive as `0, 1, …, D-1`, each exactly
//! once. Anything else (a gap, a repeat, a step back, an index past `D-1`, or fewer than `D`
//! by the end of the body) marks the stream as dropped, with the first problem as the reason.

use tokio::time::Instant;

/// Largest marker index accepted; longer digit runs are not markers.
const MAX_INDEX: u64 = u32::MAX as u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Outside a marker.
    Idle,
    /// Saw `t` at a word boundary.
    T,
    /// Saw `t0`: only a space may follow (no leading zeros).
    Zero,
    /// Saw `t` and a number.
    Digits(u64),
}

/// Incremental scanner for `t<i> ` markers.
#[derive(Clone, Debug)]
pub struct MarkerScanner {
    state: State,
    /// The previous byte was a word byte (so a `t` here is not at a boundary).
    prev_word: bool,
}

impl Default for MarkerScanner {
    fn default() -> Self {
        MarkerScanner {
            state: State::Idle,
            prev_word: false,
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl MarkerScanner {
    /// Scans the next bytes of the body, calling `on_marker(i)` for every complete `t<i> `.
    pub fn feed(&mut self, bytes: &[u8], mut on_marker: impl FnMut(u64)) {
        for &b in bytes {
            self.state = match self.state {
                State::Idle if b == b't' && !self.prev_word => State::T,
                State::Idle => State::Idle,
                State::T => match b {
                    b'0' => State::Zero,
                    b'1'..=b'9' => State::Digits(u64::from(b - b'0')),
                    _ => State::Idle,
                },
                State::Zero => {
                    if b == b' ' {
                        on_marker(0);
                    }
                    State::Idle
                }
                State::Digits(v) => match b {
                    b'0'..=b'9' => v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .filter(|&v| v <= MAX_INDEX)
                        .map_or(State::Idle, State::Digits),
                    b' ' => {
                        on_marker(v);
                        State::Idle
                    }
                    _ => State::Idle,
                },
            };
            self.prev_word = is_word(b);
        }
    }
}

/// Why a stream counts as dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// A marker arrived before the one expected: at least one frame was lost.
    Skipped,
    /// A marker arrived again, or after a later one.
    OutOfOrder,
    /// A marker index at or past the number of deltas expected.
    Extra,
    /// The body ended cleanly with fewer markers than expected.
    Incomplete,
    /// The connection failed or the body was cut short after the response head.
    Truncated,
    /// The per-request timeout struck after the response head.
    Timeout,
}

impl DropReason {
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Skipped => "skipped",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::Extra => "extra",
            DropReason::Incomplete => "incomplete",
            DropReason::Truncated => "truncated",
            DropReason::Timeout => "timeout",
        }
    }
}

/// Follows the markers of one stream: arrival time of each, and the first sequence problem.
#[derive(Debug)]
pub struct FrameTracker {
    scanner: MarkerScanner,
    expected: u32,
    /// Index of the next marker expected (= markers accepted so far).
    next: u32,
    /// Arrival time of marker `i` at position `i`.
    arrivals: Vec<Instant>,
    /// Every marker seen, in or out of order.
    seen: u64,
    problem: Option<DropReason>,
}

impl FrameTracker {
    pub fn new(expected: u32) -> Self {
        FrameTracker {
            scanner: MarkerScanner::default(),
            expected,
            next: 0,
            arrivals: Vec::with_capacity(expected.min(1 << 16) as usize),
            seen: 0,
            problem: None,
        }
    }

    /// Body bytes that arrived at `at`.
    pub fn feed(&mut self, bytes: &[u8], at: Instant) {
        let expected = u64::from(self.expected);
        let next = &mut self.next;
        let arrivals = &mut self.arrivals;
        let seen = &mut self.seen;
        let problem = &mut self.problem;
        self.scanner.feed(bytes, |i| {
            *seen += 1;
            if problem.is_some() {
                return;
            }
            let want = u64::from(*next);
            if i == want && i < expected {
                arrivals.push(at);
                *next += 1;
            } else if i >= expected {
                *problem = Some(DropReason::Extra);
            } else if i > want {
                *problem = Some(DropReason::Skipped);
            } else {
                *problem = Some(DropReason::OutOfOrder);
            }
        });
    }

    /// The stream's verdict once its body has ended cleanly.
    pub fn verdict(&self) -> Result<(), DropReason> {
        match self.problem {
            Some(reason) => Err(reason),
            None if self.next < self.expected => Err(DropReason::Incomplete),
            None => Ok(()),
        }
    }

    /// Arrival times of the markers accepted, in order.
    pub fn arrivals(&self) -> &[Instant] {
        &self.arrivals
    }

    /// Every marker seen, including those out of sequence.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> Vec<u64> {
        let mut s = MarkerScanner::default();
        let mut found = Vec::new();
        for p in parts {
            s.feed(p, |i| found.push(i));
        }
        found
    }

    #[test]
    fn finds_markers_in_every_framing() {
        assert_eq!(scan_all(&[b"t0 t1 t2 "]), [0, 1, 2]);
        let v4 = b"event: content_chunk\r\ndata: {\"choices\": [{\"delta\": {\"content\": \"t0 \"}, \"index\": 0}]}\r\n\r\nevent: content_chunk\r\ndata: {\"choices\": [{\"delta\": {\"content\": \"t1 \"}, \"index\": 0}]}\r\n\r\n";
        assert_eq!(scan_all(&[v4]), [0, 1]);
        let anthropic = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01t5Xt7 \",\"model\":\"claude-3-5-sonnet-20240620\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"t10 \"}}\n\n";
        assert_eq!(scan_all(&[anthropic]), [10]);
        let openai =
            b"data: {\"id\":\"chatcmpl-t5ab\",\"choices\":[{\"delta\":{\"content\":\"t123 \"}}]}\n\n";
        assert_eq!(scan_all(&[openai]), [123]);
    }

    #[test]
    fn markers_split_across_reads() {
        assert_eq!(scan_all(&[b"t", b"1", b"2", b" "]), [12]);
        assert_eq!(scan_all(&[b"\"t0", b" \"", b"\"t", b"1 \""]), [0, 1]);
        let whole = b"x t7 \"t8 \" t99 ";
        for cut in 0..=whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(scan_all(&[a, b]), [7, 8, 99], "cut at {cut}");
        }
    }

    #[test]
    fn rejects_look_alikes() {
        assert!(scan_all(&[b"at1 ", b"xt2 ", b"_t3 ", b"9t4 "]).is_empty());
        assert!(scan_all(&[b"t01 t00 t1x t t- T1 "]).is_empty());
        assert!(scan_all(&[b"t99999999999999999999 "]).is_empty());
        assert!(scan_all(&[b"t1\"", b"t2\n"]).is_empty());
        assert_eq!(scan_all(&[b"t0  t1 "]), [0, 1]);
        assert_eq!(scan_all(&[b"t4294967295 "]), [4_294_967_295]);
    }

    fn track(expected: u32, body: &[u8]) -> FrameTracker {
        let mut t = FrameTracker::new(expected);
        let now = Instant::now();
        for b in body.chunks(3) {
            t.feed(b, now);
        }
        t
    }

    #[test]
    fn tracker_verdicts() {
        let t = track(3, b"t0 t1 t2 ");
        assert_eq!(t.verdict(), Ok(()));
        assert_eq!(t.arrivals().len(), 3);
        assert_eq!(t.seen(), 3);

        assert_eq!(
            track(4, b"t0 t1 t3 ").verdict(),
            Err(DropReason::Skipped),
            "a missing marker"
        );
        assert_eq!(track(3, b"t0 t2 t1 ").verdict(), Err(DropReason::Skipped));
        assert_eq!(
            track(3, b"t0 t1 t1 t2 ").verdict(),
            Err(DropReason::OutOfOrder)
        );
        assert_eq!(track(2, b"t0 t1 t2 ").verdict(), Err(DropReason::Extra));
        assert_eq!(track(3, b"t0 t1 ").verdict(), Err(DropReason::Incomplete));
        assert_eq!(track(3, b"").verdict(), Err(DropReason::Incomplete));
        assert_eq!(track(0, b"").verdict(), Ok(()));
        let t = track(4, b"t0 t2 t3 ");
        assert_eq!(t.seen(), 3);
        assert_eq!(t.arrivals().len(), 1);
    }
}
