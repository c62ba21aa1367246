//! Gap detection and replay protection: the sequence numbers seen per
//! (origin, epoch), the origin's repair address from its heartbeats, and the
//! ranges it missed.
//!
//! Replays: a frame whose sequence number was already accepted for its
//! (origin, epoch), or fell out of the window of the last [`WINDOW`] numbers,
//! is a replay; so is a frame of an epoch older than the origin's newest one
//! once [`EPOCH_GRACE`] has passed since the newest appeared. (The receive loop
//! also drops frames sealed longer ago than `--max-frame-age-ms`, which covers
//! origins this table has forgotten or never saw.) The table holds at most
//! `max` origins: a flood of invented origins evicts the longest-silent ones
//! instead of growing memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use memcast_core::{Frame, Op};

/// Sequence numbers below the highest one accepted that may still arrive
/// (late, out of order) once each.
pub const WINDOW: u64 = 128;
/// Frames of an origin's older epoch are accepted this long after its newer
/// epoch first appeared (what was in flight when it restarted).
pub const EPOCH_GRACE: Duration = Duration::from_secs(10);

/// Why [`Origins::observe`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// This sequence number of this (origin, epoch) was already accepted.
    Duplicate,
    /// Older than the window of sequence numbers still accepted.
    BelowWindow,
    /// An epoch the origin has since replaced.
    OldEpoch,
    /// This host's own relay origin, which it never hears on the group.
    OwnOrigin,
    /// Already fetched over TCP from the origin's ring (the group delivered
    /// it late): a duplicate, not an attack.
    Repaired,
}

impl std::fmt::Display for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Replay::Duplicate => "sequence number already received",
            Replay::BelowWindow => "sequence number below the replay window",
            Replay::OldEpoch => "epoch older than the origin's current one",
            Replay::OwnOrigin => "this host's own origin, heard from someone else",
            Replay::Repaired => "already repaired from the origin's ring",
        })
    }
}

/// What [`Origins::learn`] made of a relay's heartbeat fetched over TCP.
#[derive(Debug, PartialEq, Eq)]
pub enum Learnt {
    /// Not a heartbeat, an (origin, epoch) already known, or an epoch
    /// older than one known: nothing changed.
    Ignored,
    /// Known from now on; what is missing of it, if anything.
    New(Option<Missing>),
}

/// An origin that serves repairs and has not been heard for two of its
/// heartbeat intervals: asked directly where its sequence stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Silent {
    pub origin: u64,
    pub epoch: u64,
    /// The last sequence number this host holds from it.
    pub last_seq: u64,
    pub repair_addr: String,
}

/// After a memcached restart, each origin's writes of about this many
/// seconds before it are replayed from its ring (see
/// [`Origins::replay_points`]): more than a peer's snapshot normally lags.
pub const REPLAY_SECONDS: usize = 10;

/// An origin's last sequence number once a second, [`REPLAY_SECONDS`]
/// back: where a replay of its last seconds starts.
#[derive(Debug, Default)]
pub struct SeqHistory(VecDeque<u64>);

impl SeqHistory {
    /// Once a second: where the origin's sequence stands now.
    pub fn record(&mut self, last_seq: u64) {
        if self.0.len() > REPLAY_SECONDS {
            self.0.pop_front();
        }
        self.0.push_back(last_seq);
    }

    /// The oldest sample: replay what the origin sent after it (everything,
    /// for an origin not sampled yet).
    pub fn replay_after(&self) -> u64 {
        self.0.front().copied().unwrap_or(0)
    }
}

/// Where a replay of an origin's last writes starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayPoint {
    pub origin: u64,
    pub epoch: u64,
    /// Replay what it sent after this sequence number.
    pub after: u64,
    pub repair_addr: String,
}

/// Whether an origin may be asked over TCP: it serves repairs, is not
/// given up, and this is its newest epoch.
fn askable(newest_epoch: &HashMap<u64, (u64, Instant)>, id: &(u64, u64), s: &OriginState) -> bool {
    s.repair_addr.is_some()
        && !s.given_up
        && newest_epoch.get(&id.0).is_none_or(|(e, _)| *e == id.1)
}

/// Ranges of repaired sequence numbers kept per origin.
const REPAIRED_RANGES: usize = 16;

/// Adds `from..=to` to disjoint ranges kept lowest first, merging what it
/// touches or overlaps; beyond [`REPAIRED_RANGES`] the lowest go.
fn add_range(ranges: &mut Vec<(u64, u64)>, from: u64, to: u64) {
    let (mut from, mut to) = (from, to);
    ranges.retain(|&(f, t)| {
        let touches = f <= to.saturating_add(1) && from <= t.saturating_add(1);
        if touches {
            from = from.min(f);
            to = to.max(t);
        }
        !touches
    });
    let at = ranges.partition_point(|&(f, _)| f < from);
    ranges.insert(at, (from, to));
    if ranges.len() > REPAIRED_RANGES {
        ranges.remove(0);
    }
}

/// Added to two heartbeat intervals before an origin counts as silent: a
/// heartbeat a busy host sends a little late is not silence.
pub const SILENT_SLACK: Duration = Duration::from_millis(200);

/// A silent origin stops counting after this long, provided another origin
/// is heard meanwhile (so it is gone, not this host cut off): see
/// [`Origins::silent`].
pub const SILENT_GIVE_UP: Duration = Duration::from_secs(60);

/// A run of frames an origin sent that this host never received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub origin: u64,
    pub epoch: u64,
    pub from: u64,
    pub to: u64,
    /// Where the origin serves repairs (from its heartbeats), if it does.
    pub repair_addr: Option<String>,
}

#[derive(Debug)]
struct OriginState {
    last_seq: u64,
    /// Highest sequence number accepted (0: none yet), and which of the
    /// [`WINDOW`] numbers up to it were (bit i: `high - i`).
    high: u64,
    window: u128,
    /// Send time of the latest heartbeat accepted.
    last_heartbeat_ms: u64,
    /// Between its last two heartbeats, ms (0: not known yet).
    heartbeat_ms: u64,
    /// Sequence numbers fetched over TCP (repair, catch-up): when the group
    /// delivers them late they are duplicates. Disjoint ranges, lowest
    /// first, at most [`REPAIRED_RANGES`] (the lowest go first).
    repaired: Vec<(u64, u64)>,
    /// Silent so long that it no longer counts (see [`Origins::silent`]), or
    /// its epoch ended (the origin restarted): not asked any more.
    given_up: bool,
    /// How old its last write (set, delete) was when it arrived, ms.
    lag_ms: u64,
    repair_addr: Option<String>,
    /// The host name its heartbeats carry (a relay's `--host-name`).
    host: Option<String>,
    seen: Instant,
    /// Whether [`Origins::newly_started_relay`] already reported it.
    announced: bool,
    /// Catch-ups it answered since the group last brought anything from it
    /// (see [`Origins::caught_up`]).
    deaf_catch_ups: u32,
    /// `last_seq` once a second (see [`Origins::replay_points`]).
    history: SeqHistory,
    /// Frames missed before the origin's repair address was known, and
    /// since when: held until a heartbeat names the address.
    unaddressed: Option<(u64, u64, Instant)>,
}

#[derive(Debug)]
pub struct Origins {
    map: HashMap<(u64, u64), OriginState>,
    /// Each origin's newest epoch and when it first appeared.
    newest_epoch: HashMap<u64, (u64, Instant)>,
    /// Epochs (origin start times, ms) after this one began after we did, so
    /// their first frames were meant for us too.
    started_ms: u64,
    max: usize,
    evicted: u64,
}

impl Origins {
    pub fn new(started_ms: u64, max: usize) -> Origins {
        Origins {
            map: HashMap::new(),
            newest_epoch: HashMap::new(),
            started_ms,
            max: max.max(1),
            evicted: 0,
        }
    }

    /// A new bound (SIGHUP); a smaller table shrinks as origins come.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    /// Origins evicted because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Replay check for one frame: a data frame's sequence number must be
    /// new for its (origin, epoch); an epoch older than the origin's newest
    /// is refused after [`EPOCH_GRACE`]. Heartbeats repeat the last sequence
    /// number, so only their epoch is checked. Accepted frames are recorded;
    /// then call [`Origins::observe`].
    pub fn admit(&mut self, frame: &Frame, sent_ms: u64) -> Result<(), Replay> {
        if self.newest_epoch.len() > 2 * self.max {
            let map = &self.map;
            self.newest_epoch
                .retain(|origin, (epoch, _)| map.contains_key(&(*origin, *epoch)));
        }
        if self
            .note_epoch(frame)
            .is_some_and(|newest_for| newest_for > EPOCH_GRACE)
        {
            return Err(Replay::OldEpoch);
        }
        let state = self.entry(frame);
        if frame.op == Op::Heartbeat {
            // Heartbeats repeat the sequence number; their send times grow.
            if sent_ms <= state.last_heartbeat_ms {
                return Err(Replay::Duplicate);
            }
            if state.last_heartbeat_ms > 0 {
                state.heartbeat_ms = (sent_ms - state.last_heartbeat_ms).clamp(10, 60_000);
            }
            state.last_heartbeat_ms = sent_ms;
            return Ok(());
        }
        if frame.seq == 0 {
            return Err(Replay::BelowWindow); // numbers start at 1
        }
        if state
            .repaired
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&frame.seq))
        {
            // Late, but the group brought it: the receiver hears this origin.
            state.deaf_catch_ups = 0;
            return Err(Replay::Repaired);
        }
        if frame.seq > state.high {
            let shift = frame.seq - state.high;
            state.window = if state.high == 0 || shift >= 128 {
                0
            } else {
                state.window << shift
            } | 1;
            state.high = frame.seq;
            return Ok(());
        }
        let back = state.high - frame.seq;
        if back >= WINDOW {
            return Err(Replay::BelowWindow);
        }
        if state.window & (1u128 << back) != 0 {
            return Err(Replay::Duplicate);
        }
        state.window |= 1u128 << back;
        Ok(())
    }

    /// The state of a frame's (origin, epoch), made on first sight (room
    /// made first when the table is full).
    fn entry(&mut self, frame: &Frame) -> &mut OriginState {
        let id = (frame.origin, frame.epoch);
        if !self.map.contains_key(&id) && self.map.len() >= self.max {
            self.evict_one();
        }
        // Sequence numbers a heartbeat vouches for include its own.
        let covered = if frame.op == Op::Heartbeat {
            frame.seq
        } else {
            frame.seq.saturating_sub(1)
        };
        let started_ms = self.started_ms;
        self.map.entry(id).or_insert_with(|| OriginState {
            high: 0,
            window: 0,
            last_heartbeat_ms: 0,
            heartbeat_ms: 0,
            repaired: Vec::new(),
            given_up: false,
            lag_ms: 0,
            // An origin that started after us sent us everything from 1; one
            // that started before we did is covered by our startup resync.
            last_seq: if frame.epoch >= started_ms {
                0
            } else {
                covered
            },
            repair_addr: None,
            host: None,
            seen: Instant::now(),
            announced: false,
            deaf_catch_ups: 0,
            history: SeqHistory::default(),
            unaddressed: None,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// What `/metrics` and `memcastd status` show per origin.
    pub fn stats(&self) -> Vec<crate::metrics::OriginStat> {
        let mut out: Vec<_> = self
            .map
            .iter()
            .map(|((origin, epoch), s)| crate::metrics::OriginStat {
                origin: *origin,
                epoch: *epoch,
                last_seq: s.last_seq,
                lag_ms: s.lag_ms,
                idle_ms: s.seen.elapsed().as_millis() as u64,
                host: s.host.clone().unwrap_or_default(),
            })
            .collect();
        out.sort_by_key(|o| (o.idle_ms, o.origin));
        out
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records a frame; returns what it reveals as missing. A heartbeat
    /// carries the origin's last sequence number (so a lost tail shows) and
    /// its repair address. A new epoch is a restarted origin, not a gap.
    pub fn observe(&mut self, frame: &Frame) -> Option<Missing> {
        let heartbeat = frame.op == Op::Heartbeat;
        // Sequence numbers a heartbeat vouches for include its own.
        let covered = if heartbeat {
            frame.seq
        } else {
            frame.seq.saturating_sub(1)
        };
        let state = self.entry(frame);
        state.seen = Instant::now();
        state.given_up = false;
        state.deaf_catch_ups = 0;
        if frame.op.stores() {
            state.lag_ms = memcast_core::unix_millis().saturating_sub(frame.version.millis);
        }
        if heartbeat {
            let addr = String::from_utf8_lossy(&frame.value).into_owned();
            state.repair_addr = Some(addr).filter(|a| !a.is_empty());
            // Its key carries the sender's host name (empty from a PHP
            // process or an older memcastd).
            if !frame.key.is_empty() {
                state.host = Some(String::from_utf8_lossy(&frame.key).into_owned());
            }
        }
        let mut missing = (covered > state.last_seq).then_some((state.last_seq + 1, covered));
        state.last_seq = state.last_seq.max(frame.seq);
        if state.repair_addr.is_none() {
            // Perhaps no heartbeat has arrived yet: hold the range until one
            // names the repair address (or [`Origins::unaddressed_since`]).
            if let Some((from, to)) = missing {
                let held = state.unaddressed.get_or_insert((from, to, Instant::now()));
                held.0 = held.0.min(from);
                held.1 = held.1.max(to);
            }
            return None;
        }
        if let Some((from, to, _)) = state.unaddressed.take() {
            missing = Some(match missing {
                Some((f, t)) => (f.min(from), t.max(to)),
                None => (from, to),
            });
        }
        missing.map(|(from, to)| Missing {
            origin: frame.origin,
            epoch: frame.epoch,
            from,
            to,
            repair_addr: state.repair_addr.clone(),
        })
    }

    /// A relay's heartbeat fetched over TCP from its host, because the group
    /// does not bring that relay here: from now on the origin is known, so
    /// it is caught up from its ring while it is silent on the group (and
    /// the receiver joins the group again when that goes on). With it, what
    /// is missing of it: nothing new when a warm-up still to come will hold
    /// what it sent so far (`from_start` false), else everything from its
    /// first frame (a snapshot taken earlier holds none of it for sure).
    pub fn learn(&mut self, frame: &Frame, from_start: bool) -> Learnt {
        if frame.op != Op::Heartbeat
            || self.map.contains_key(&(frame.origin, frame.epoch))
            || self.note_epoch(frame).is_some()
        {
            return Learnt::Ignored;
        }
        let state = self.entry(frame);
        if from_start {
            state.last_seq = 0;
        }
        Learnt::New(self.observe(frame))
    }

    /// Records `frame`'s epoch as its origin's newest when it is (or the
    /// first seen); for an older one, how long the newest has been known.
    fn note_epoch(&mut self, frame: &Frame) -> Option<Duration> {
        let now = Instant::now();
        let newest = self
            .newest_epoch
            .entry(frame.origin)
            .or_insert((frame.epoch, now));
        if frame.epoch > newest.0 {
            *newest = (frame.epoch, now);
        }
        (frame.epoch < newest.0).then(|| now.saturating_duration_since(newest.1))
    }

    /// Whether this (origin, epoch) is in the table.
    pub fn knows(&self, origin: u64, epoch: u64) -> bool {
        self.map.contains_key(&(origin, epoch))
    }

    /// The repair addresses of the relays this host follows now (each
    /// origin's current epoch, not given up).
    pub fn relay_addrs(&self) -> std::collections::HashSet<&str> {
        self.map
            .iter()
            .filter(|(id, s)| askable(&self.newest_epoch, id, s))
            .filter_map(|(_, s)| s.repair_addr.as_deref())
            .collect()
    }

    /// Ranges missed from origins that named no repair address within
    /// `wait` (PHP workers publishing directly send no heartbeats): only a
    /// resync can bring those back.
    pub fn unaddressed_since(&mut self, wait: Duration) -> Vec<Missing> {
        let mut out = Vec::new();
        for ((origin, epoch), state) in &mut self.map {
            if let Some((from, to, since)) = state.unaddressed {
                if since.elapsed() >= wait {
                    state.unaddressed = None;
                    out.push(Missing {
                        origin: *origin,
                        epoch: *epoch,
                        from,
                        to,
                        repair_addr: None,
                    });
                }
            }
        }
        out
    }

    /// Whether this origin names where it serves repairs (a relay's
    /// heartbeats do; a PHP worker publishing directly never does).
    pub fn serves_repairs(&self, origin: u64, epoch: u64) -> bool {
        self.map
            .get(&(origin, epoch))
            .is_some_and(|s| s.repair_addr.is_some())
    }

    /// Ranges held back until their origin names a repair address.
    pub fn has_unaddressed(&self) -> bool {
        self.map.values().any(|s| s.unaddressed.is_some())
    }

    /// Origins that serve repairs and have not been heard for two of their
    /// heartbeat intervals (`default_heartbeat` until two were seen) and
    /// [`SILENT_SLACK`]. One
    /// silent for [`SILENT_GIVE_UP`] while another origin is heard is gone
    /// (its host died, or left): it is given up, with its repair address
    /// (returned once in the second list), until it is heard again. When
    /// every origin is silent, this host is the one cut off: none is given up.
    pub fn silent(&mut self, default_heartbeat: Duration) -> (Vec<Silent>, Vec<String>) {
        let newest = &self.newest_epoch;
        let limit = |s: &OriginState| {
            let beat = if s.heartbeat_ms > 0 {
                Duration::from_millis(s.heartbeat_ms)
            } else {
                default_heartbeat
            };
            2 * beat + SILENT_SLACK
        };
        let current = |id: &(u64, u64), s: &OriginState| askable(newest, id, s);
        let any_heard = self
            .map
            .iter()
            .any(|(id, s)| current(id, s) && s.seen.elapsed() <= limit(s));
        let mut silent = Vec::new();
        let mut given_up = Vec::new();
        for (id, s) in self.map.iter_mut() {
            if !current(id, s) || s.seen.elapsed() <= limit(s) {
                continue;
            }
            let addr = s.repair_addr.clone().unwrap_or_default();
            if any_heard && s.seen.elapsed() > SILENT_GIVE_UP {
                s.given_up = true;
                given_up.push(addr);
                continue;
            }
            silent.push(Silent {
                origin: id.0,
                epoch: id.1,
                last_seq: s.last_seq,
                repair_addr: addr,
            });
        }
        (silent, given_up)
    }

    /// The origin answered over TCP: frames `from..=through` (when any) were
    /// fetched from its ring and applied, so they are neither missing nor,
    /// when the group delivers them late, new.
    pub fn heard(&mut self, origin: u64, epoch: u64, from: u64, through: Option<u64>) {
        let Some(state) = self.map.get_mut(&(origin, epoch)) else {
            return;
        };
        state.seen = Instant::now();
        state.given_up = false;
        let Some(through) = through.filter(|t| *t >= from) else {
            return;
        };
        if from <= state.last_seq + 1 {
            state.last_seq = state.last_seq.max(through);
        }
        add_range(&mut state.repaired, from, through);
    }

    /// A catch-up of an origin silent on the group was answered over TCP:
    /// it is alive and sending (at least heartbeats), and this host's
    /// receiver does not hear it. Returns how many catch-ups in a row it
    /// answered with nothing from it on the group in between.
    pub fn caught_up(&mut self, origin: u64, epoch: u64) -> u32 {
        let Some(state) = self.map.get_mut(&(origin, epoch)) else {
            return 0;
        };
        state.deaf_catch_ups += 1;
        state.deaf_catch_ups
    }

    /// Once a second: where each origin's sequence stands, kept
    /// [`REPLAY_SECONDS`] back.
    pub fn sample(&mut self) {
        for state in self.map.values_mut() {
            state.history.record(state.last_seq);
        }
    }

    /// For every origin that serves repairs (its current epoch): where a
    /// replay of its writes of the last [`REPLAY_SECONDS`] starts (all of
    /// them for one first heard since the last sample).
    pub fn replay_points(&self) -> Vec<ReplayPoint> {
        self.map
            .iter()
            .filter(|(id, s)| askable(&self.newest_epoch, id, s))
            .map(|(id, s)| ReplayPoint {
                origin: id.0,
                epoch: id.1,
                after: s.history.replay_after(),
                repair_addr: s.repair_addr.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// After rejoining the group: every origin gets a fresh count.
    pub fn forget_catch_ups(&mut self) {
        for state in self.map.values_mut() {
            state.deaf_catch_ups = 0;
        }
    }

    /// Stops asking an (origin, epoch) whose ring is gone: the origin
    /// restarted (its newer epoch is known) or this host resyncs instead.
    pub fn give_up(&mut self, origin: u64, epoch: u64) {
        if let Some(state) = self.map.get_mut(&(origin, epoch)) {
            state.given_up = true;
        }
    }

    /// The newest epoch seen of an origin.
    pub fn newest_epoch(&self, origin: u64) -> Option<u64> {
        self.newest_epoch.get(&origin).map(|(e, _)| *e)
    }

    /// The repair address of a relay whose first heartbeat this is, when it
    /// started after we did. Such a host may hold writes nobody else has (its
    /// PHP stored them locally while its memcastd was away), so peers pull a
    /// snapshot from it once. Call after [`Origins::observe`].
    pub fn newly_started_relay(&mut self, frame: &Frame) -> Option<String> {
        if frame.op != Op::Heartbeat || frame.epoch < self.started_ms {
            return None;
        }
        let state = self.map.get_mut(&(frame.origin, frame.epoch))?;
        if state.announced {
            return None;
        }
        let addr = state.repair_addr.clone()?;
        state.announced = true;
        Some(addr)
    }

    /// Forgets origins not heard from for `idle` (short-lived PHP processes
    /// publishing directly are many), so memory stays bounded.
    pub fn forget_idle(&mut self, idle: Duration) {
        self.map.retain(|_, s| s.seen.elapsed() < idle);
        let map = &self.map;
        self.newest_epoch
            .retain(|origin, (epoch, _)| map.contains_key(&(*origin, *epoch)));
    }

    /// Makes room: drops the (origin, epoch) silent for longest.
    fn evict_one(&mut self) {
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, s)| s.seen)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.map.remove(&id);
            if self
                .newest_epoch
                .get(&id.0)
                .is_some_and(|(e, _)| *e == id.1)
            {
                self.newest_epoch.remove(&id.0);
            }
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memcast_core::Version;

    /// A frame admitted (it must be) and observed: what it shows missing.
    fn hear(o: &mut Origins, f: &Frame, sent_ms: u64) -> Option<Missing> {
        assert_eq!(o.admit(f, sent_ms), Ok(()), "admitted");
        o.observe(f)
    }

    fn frame(op: Op, epoch: u64, seq: u64) -> Frame {
        Frame {
            op,
            origin: 1,
            epoch,
            seq,
            version: Version::ZERO,
            ttl: 0,
            key: b"k".to_vec(),
            value: if op == Op::Heartbeat {
                b"10.0.0.1:7711".to_vec()
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn catch_ups_answered_in_a_row_count_until_the_group_brings_the_origin_again() {
        let mut o = Origins::new(0, 100);
        hear(&mut o, &frame(Op::Heartbeat, 5, 0), 10);
        assert_eq!(o.caught_up(1, 5), 1);
        o.heard(1, 5, 1, Some(3));
        assert_eq!(o.caught_up(1, 5), 2);
        // A frame the catch-up fetched, delivered late by the group: heard.
        assert_eq!(o.admit(&frame(Op::Set, 5, 2), 20), Err(Replay::Repaired));
        assert_eq!(o.caught_up(1, 5), 1);
        // A new frame from the group: heard.
        hear(&mut o, &frame(Op::Set, 5, 4), 30);
        assert_eq!(o.caught_up(1, 5), 1);
        o.caught_up(1, 5);
        o.forget_catch_ups();
        assert_eq!(o.caught_up(1, 5), 1);
        assert_eq!(o.caught_up(9, 5), 0, "an origin never heard");
    }

    #[test]
    fn a_relay_learnt_over_tcp_is_followed_and_its_past_asked_only_without_a_warm_up_to_come() {
        // Origins::new(started_ms = 10): epoch 5 started before this host.
        let mut o = Origins::new(10, 100);
        assert!(o.relay_addrs().is_empty());
        // Before the warm-up: what it sent so far comes with the snapshot.
        assert_eq!(
            o.learn(&frame(Op::Heartbeat, 5, 40), false),
            Learnt::New(None)
        );
        assert!(o.knows(1, 5));
        assert!(o.relay_addrs().contains("10.0.0.1:7711"));
        // Its next frames are followed from 40 on: a gap shows as usual.
        let gap = hear(&mut o, &frame(Op::Set, 5, 43), 20).unwrap();
        assert_eq!((gap.from, gap.to), (41, 42));
        // Known already: nothing more.
        assert_eq!(o.learn(&frame(Op::Heartbeat, 5, 50), true), Learnt::Ignored);
        // After the warm-up (or none to come): everything from its first frame.
        let mut late = Origins::new(10, 100);
        let Learnt::New(Some(all)) = late.learn(&frame(Op::Heartbeat, 5, 40), true) else {
            panic!("learnt with nothing missing");
        };
        assert_eq!((all.from, all.to), (1, 40));
        assert_eq!(all.repair_addr.as_deref(), Some("10.0.0.1:7711"));
        // Only heartbeats, and never an epoch older than one known.
        assert_eq!(late.learn(&frame(Op::Set, 6, 3), true), Learnt::Ignored);
        assert!(!late.knows(1, 6));
        hear(&mut late, &frame(Op::Heartbeat, 7, 1), 30);
        assert_eq!(
            late.learn(&frame(Op::Heartbeat, 6, 9), true),
            Learnt::Ignored
        );
        assert!(!late.knows(1, 6));
        // A given-up relay is no longer followed.
        late.give_up(1, 7);
        assert!(!late.relay_addrs().contains("10.0.0.1:7711"));
    }

    #[test]
    fn a_replay_starts_where_each_origin_stood_ten_seconds_ago() {
        let mut o = Origins::new(0, 100);
        let mut seq = 0;
        for _ in 0..(REPLAY_SECONDS + 5) {
            seq += 1;
            hear(&mut o, &frame(Op::Set, 5, seq), seq);
            o.sample();
        }
        assert_eq!(o.replay_points(), [], "no repair address: nothing to ask");
        hear(&mut o, &frame(Op::Heartbeat, 5, seq), 100);
        let points = o.replay_points();
        assert_eq!(points.len(), 1);
        assert_eq!(
            (points[0].after, points[0].repair_addr.as_str()),
            (seq - REPLAY_SECONDS as u64, "10.0.0.1:7711"),
            "what it held {REPLAY_SECONDS} samples ago"
        );
        // An epoch not sampled yet: everything it sent.
        hear(&mut o, &frame(Op::Heartbeat, 6, 3), 200);
        let newest: Vec<_> = o
            .replay_points()
            .into_iter()
            .map(|p| (p.epoch, p.after))
            .collect();
        assert_eq!(newest, [(6, 0)], "only the origin's newest epoch");
    }

    #[test]
    fn repaired_ranges_are_kept_apart_merged_when_they_touch_and_bounded() {
        let mut r = Vec::new();
        add_range(&mut r, 1, 2000);
        add_range(&mut r, 2005, 2005);
        assert_eq!(r, [(1, 2000), (2005, 2005)], "a repair beside a catch-up");
        add_range(&mut r, 2001, 2004);
        assert_eq!(r, [(1, 2005)], "the gap between them filled: one range");
        add_range(&mut r, 3000, 3010);
        add_range(&mut r, 2500, 2600);
        assert_eq!(r, [(1, 2005), (2500, 2600), (3000, 3010)]);
        add_range(&mut r, 2550, 3005);
        assert_eq!(r, [(1, 2005), (2500, 3010)]);
        for i in 0..20u64 {
            add_range(&mut r, 10_000 + 10 * i, 10_000 + 10 * i + 1);
        }
        assert_eq!(r.len(), REPAIRED_RANGES);
        assert_eq!(r[0], (10_040, 10_041), "the lowest went first");
    }

    #[test]
    fn a_late_delivery_of_a_caught_up_frame_is_repaired_after_a_later_repair_elsewhere() {
        let mut o = Origins::new(0, 100);
        let f = frame(Op::Heartbeat, 5, 0);
        hear(&mut o, &f, 10);
        o.heard(1, 5, 1, Some(500));
        o.heard(1, 5, 700, Some(700));
        assert_eq!(o.admit(&frame(Op::Set, 5, 10), 20), Err(Replay::Repaired));
        assert_eq!(o.admit(&frame(Op::Set, 5, 700), 21), Err(Replay::Repaired));
        assert_eq!(
            o.admit(&frame(Op::Set, 5, 600), 22),
            Ok(()),
            "never fetched"
        );
    }

    #[test]
    fn skipped_sequence_numbers_are_missing() {
        let mut o = Origins::new(0, 100);
        o.observe(&frame(Op::Heartbeat, 5, 0));
        assert_eq!(o.observe(&frame(Op::Set, 5, 1)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 2)), None);
        let m = o.observe(&frame(Op::Set, 5, 5)).unwrap();
        assert_eq!((m.from, m.to), (3, 4));
        assert_eq!(o.observe(&frame(Op::Set, 5, 6)), None);
    }

    #[test]
    fn heartbeat_reveals_a_lost_tail_and_the_repair_address() {
        let mut o = Origins::new(0, 100);
        o.observe(&frame(Op::Set, 5, 1));
        let m = o.observe(&frame(Op::Heartbeat, 5, 3)).unwrap();
        assert_eq!((m.from, m.to), (2, 3));
        assert_eq!(m.repair_addr.as_deref(), Some("10.0.0.1:7711"));
        assert_eq!(o.observe(&frame(Op::Heartbeat, 5, 3)), None);
    }

    #[test]
    fn a_gap_seen_before_any_heartbeat_waits_for_the_repair_address() {
        let mut o = Origins::new(0, 100);
        o.observe(&frame(Op::Set, 5, 1));
        assert_eq!(
            o.observe(&frame(Op::Set, 5, 4)),
            None,
            "held: no address yet"
        );
        let m = o.observe(&frame(Op::Heartbeat, 5, 6)).unwrap();
        assert_eq!(
            (m.from, m.to),
            (2, 6),
            "held range merged with the lost tail"
        );
        assert_eq!(m.repair_addr.as_deref(), Some("10.0.0.1:7711"));
    }

    #[test]
    fn a_gap_from_an_origin_without_heartbeats_goes_to_resync_after_the_wait() {
        let mut o = Origins::new(0, 100);
        o.observe(&frame(Op::Set, 5, 1));
        o.observe(&frame(Op::Set, 5, 3));
        assert!(o.unaddressed_since(Duration::from_secs(60)).is_empty());
        let m = o.unaddressed_since(Duration::ZERO);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].from, m[0].to, m[0].repair_addr.clone()), (2, 2, None));
        assert!(o.unaddressed_since(Duration::ZERO).is_empty());
    }

    #[test]
    fn first_frames_of_an_origin_started_after_us_count_when_lost() {
        let mut o = Origins::new(100, 100);
        assert_eq!(o.observe(&frame(Op::Set, 200, 4)), None);
        let m = o.observe(&frame(Op::Heartbeat, 200, 4)).unwrap();
        assert_eq!((m.from, m.to), (1, 3));
    }

    #[test]
    fn origin_older_than_us_is_not_a_gap_on_first_sight() {
        let mut o = Origins::new(100, 100);
        assert_eq!(o.observe(&frame(Op::Set, 50, 40)), None);
        assert_eq!(o.observe(&frame(Op::Heartbeat, 50, 40)), None);
    }

    #[test]
    fn a_relay_started_after_us_is_announced_once() {
        let mut o = Origins::new(100, 100);
        let hb = frame(Op::Heartbeat, 200, 0);
        o.observe(&hb);
        assert_eq!(o.newly_started_relay(&hb).as_deref(), Some("10.0.0.1:7711"));
        o.observe(&hb);
        assert_eq!(o.newly_started_relay(&hb), None);
        let older = frame(Op::Heartbeat, 50, 0);
        o.observe(&older);
        assert_eq!(o.newly_started_relay(&older), None);
    }

    #[test]
    fn a_sequence_number_is_accepted_once() {
        let mut o = Origins::new(0, 100);
        for seq in [1, 2, 3] {
            let f = frame(Op::Set, 5, seq);
            hear(&mut o, &f, 1);
        }
        assert_eq!(o.admit(&frame(Op::Set, 5, 2), 1), Err(Replay::Duplicate));
        assert_eq!(o.admit(&frame(Op::Set, 5, 3), 1), Err(Replay::Duplicate));
        // A late frame inside the window is still accepted, once.
        assert_eq!(o.admit(&frame(Op::Set, 5, 10), 1), Ok(()));
        assert_eq!(o.admit(&frame(Op::Set, 5, 7), 1), Ok(()));
        assert_eq!(o.admit(&frame(Op::Set, 5, 7), 1), Err(Replay::Duplicate));
        assert_eq!(o.admit(&frame(Op::Set, 5, 10 + WINDOW), 1), Ok(()));
        assert_eq!(o.admit(&frame(Op::Set, 5, 9), 1), Err(Replay::BelowWindow));
        // Heartbeats repeat the last number: not replays.
        assert_eq!(o.admit(&frame(Op::Heartbeat, 5, 10 + WINDOW), 100), Ok(()));
        assert_eq!(o.admit(&frame(Op::Heartbeat, 5, 10 + WINDOW), 300), Ok(()));
        // ...but a heartbeat sent again is a replay.
        assert_eq!(
            o.admit(&frame(Op::Heartbeat, 5, 10 + WINDOW), 300),
            Err(Replay::Duplicate)
        );
        assert_eq!(o.admit(&frame(Op::Set, 5, 0), 0), Err(Replay::BelowWindow));
    }

    #[test]
    fn a_big_jump_clears_the_window() {
        let mut o = Origins::new(0, 100);
        let f = frame(Op::Set, 5, 1);
        hear(&mut o, &f, 1);
        assert_eq!(o.admit(&frame(Op::Set, 5, 1000), 1), Ok(()));
        assert_eq!(o.admit(&frame(Op::Set, 5, 999), 1), Ok(()));
        assert_eq!(o.admit(&frame(Op::Set, 5, 1000), 1), Err(Replay::Duplicate));
    }

    #[test]
    fn an_older_epoch_is_refused_after_the_grace_period() {
        let mut o = Origins::new(0, 100);
        o.admit(&frame(Op::Set, 5, 1), 1).unwrap();
        o.admit(&frame(Op::Set, 6, 1), 1).unwrap();
        assert_eq!(
            o.admit(&frame(Op::Set, 5, 2), 1),
            Ok(()),
            "within the grace"
        );
        // Pretend the newer epoch appeared long ago.
        o.newest_epoch
            .insert(1, (6, Instant::now() - EPOCH_GRACE * 2));
        assert_eq!(o.admit(&frame(Op::Set, 5, 3), 1), Err(Replay::OldEpoch));
        assert_eq!(
            o.admit(&frame(Op::Heartbeat, 5, 3), 1),
            Err(Replay::OldEpoch)
        );
        assert_eq!(o.admit(&frame(Op::Set, 6, 2), 1), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded_when_origins_are_invented() {
        let mut o = Origins::new(0, 10);
        for origin in 0..1000u64 {
            let mut f = frame(Op::Set, 5, 1);
            f.origin = origin;
            hear(&mut o, &f, 1);
        }
        assert_eq!(o.len(), 10);
        assert_eq!(o.evicted(), 990);
        assert!(o.newest_epoch.len() <= 10 + 1);
    }

    #[test]
    fn an_origin_unheard_for_two_heartbeats_is_silent_until_it_answers() {
        let mut o = Origins::new(0, 100);
        hear(&mut o, &frame(Op::Heartbeat, 5, 0), 1000);
        hear(&mut o, &frame(Op::Heartbeat, 5, 0), 1050);
        for seq in 1..=3 {
            hear(&mut o, &frame(Op::Set, 5, seq), 1060);
        }
        let beat = Duration::from_secs(3600);
        assert!(o.silent(beat).0.is_empty(), "heard just now");
        // Its measured interval (50 ms) counts, not the default.
        std::thread::sleep(Duration::from_millis(100) + SILENT_SLACK + Duration::from_millis(20));
        let (silent, given_up) = o.silent(beat);
        assert!(given_up.is_empty());
        assert_eq!(
            silent,
            vec![Silent {
                origin: 1,
                epoch: 5,
                last_seq: 3,
                repair_addr: "10.0.0.1:7711".into()
            }]
        );
        // It answers over TCP with frames 4..=9: held, and not silent.
        o.heard(1, 5, 4, Some(9));
        assert!(o.silent(beat).0.is_empty());
        // The group delivers them late: duplicates, not gaps, not applied.
        for seq in 4..=9 {
            assert_eq!(
                o.admit(&frame(Op::Set, 5, seq), 1070),
                Err(Replay::Repaired)
            );
        }
        assert_eq!(hear(&mut o, &frame(Op::Set, 5, 10), 1070), None, "no gap");
        assert_eq!(o.observe(&frame(Op::Heartbeat, 5, 10)), None);
    }

    #[test]
    fn a_silent_origin_is_given_up_only_while_others_are_heard() {
        let mut o = Origins::new(0, 100);
        let mut other = frame(Op::Heartbeat, 5, 0);
        other.origin = 2;
        for f in [frame(Op::Heartbeat, 5, 0), other.clone()] {
            hear(&mut o, &f, 1000);
        }
        let long_ago = Instant::now() - SILENT_GIVE_UP * 2;
        o.map.get_mut(&(1, 5)).unwrap().seen = long_ago;
        o.map.get_mut(&(2, 5)).unwrap().seen = long_ago;
        let beat = Duration::from_millis(100);
        assert_eq!(
            o.silent(beat).0.len(),
            2,
            "all silent: this host is cut off"
        );
        o.observe(&other);
        let (silent, given_up) = o.silent(beat);
        assert!(silent.is_empty());
        assert_eq!(given_up, vec!["10.0.0.1:7711".to_string()]);
        assert_eq!(o.silent(beat), (vec![], vec![]), "logged once");
        o.observe(&frame(Op::Heartbeat, 5, 0));
        assert!(!o.map[&(1, 5)].given_up, "heard again");
    }

    #[test]
    fn new_epoch_and_duplicates_are_not_gaps() {
        let mut o = Origins::new(0, 100);
        o.observe(&frame(Op::Set, 5, 1));
        o.observe(&frame(Op::Set, 5, 2));
        assert_eq!(o.observe(&frame(Op::Set, 6, 1)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 2)), None);
        assert_eq!(o.observe(&frame(Op::Set, 5, 1)), None);
    }
}
