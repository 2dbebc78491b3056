//! The lease rule (`limits::lease`) at fleet scale, by simulation: replicas
//! each with their own lease state, one rate limit service counting as
//! envoyproxy/ratelimit does (the hit is counted even when over), asks
//! answered after a delay in arrival order at the service, and outages.
//! Properties over random interleavings, and the table docs/deployment.md
//! shows (`cargo test --lib fleet_table -- --ignored --nocapture`).

use crate::limits::lease::{Account, Ask, Lease, LeaseRule, Take};
use proptest::prelude::*;

/// A deterministic generator (xorshift64*), so every run is the same.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How requests pick a replica.
#[derive(Clone, Copy, Debug)]
enum Traffic {
    RoundRobin,
    Uniform,
    /// Replica i gets a share proportional to 1/(i+1).
    Skewed,
}

#[derive(Clone, Copy, Debug)]
struct Run {
    limit: u64,
    replicas: u64,
    demand: u64,
    traffic: Traffic,
    /// An ask is answered after up to this many later arrivals.
    max_delay: u64,
    /// Arrivals during which the service fails every ask.
    outage: Option<(u64, u64)>,
    seed: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    admitted: u64,
    calls: u64,
    hits_counted: u64,
}

struct InFlight {
    replica: usize,
    ask: Ask,
    at: u64,
}

fn pick(run: &Run, rng: &mut Rng, t: u64) -> usize {
    let n = run.replicas;
    let r = match run.traffic {
        Traffic::RoundRobin => t % n,
        Traffic::Uniform => rng.below(n),
        Traffic::Skewed => {
            // Inverse of the harmonic weights by a walk: n is small enough.
            let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
            let mut x = (rng.below(1 << 30) as f64 / f64::from(1u32 << 30)) * total;
            let mut i = 0;
            while i + 1 < n {
                x -= 1.0 / (i + 1) as f64;
                if x < 0.0 {
                    break;
                }
                i += 1;
            }
            i
        }
    };
    usize::try_from(r).unwrap_or(0)
}

/// The window the runs count in, and the clock: the demand spread evenly
/// over its hour.
const WINDOW_START_S: u64 = 7_200;

fn ms_per_arrival(run: &Run) -> u64 {
    (3_600_000 / run.demand.max(1)).max(1)
}

fn simulate(run: &Run, rule: &LeaseRule) -> Tally {
    let mut rng = Rng(run.seed | 1);
    let account = Account::new("fleet", b"k_1", run.limit, WINDOW_START_S);
    let clock = |t: u64| WINDOW_START_S * 1000 + t * ms_per_arrival(run);
    let mut leases: Vec<Lease> = (0..run.replicas)
        .map(|_| Lease::read(None, &account))
        .collect();
    let mut count = 0u64;
    let mut flying: Vec<InFlight> = Vec::new();
    let mut tally = Tally::default();
    let down = |t: u64| run.outage.is_some_and(|(from, to)| (from..to).contains(&t));
    let end = run.demand + run.max_delay + 1;
    for t in 0..end {
        // The service answers what reached it, in the order it arrived.
        let (due, later): (Vec<InFlight>, Vec<InFlight>) =
            flying.drain(..).partition(|f| f.at <= t);
        flying = later;
        for f in due {
            let lease = &mut leases[f.replica];
            let window = if down(t) {
                lease
                    .unanswered(&f.ask)
                    .unwrap_or_else(|| lease.share_outage(&f.ask.account, rule))
            } else {
                count += f.ask.hits();
                tally.hits_counted += f.ask.hits();
                if count <= run.limit {
                    lease.granted(&f.ask, run.limit - count)
                } else {
                    lease.refused(&f.ask)
                }
            };
            tally.admitted += u64::from(window.allowed);
        }
        if t >= run.demand {
            continue;
        }
        let replica = pick(run, &mut rng, t);
        match leases[replica].take(&account, rule, clock(t)) {
            Take::Admit(_) => tally.admitted += 1,
            Take::Refuse(_) => {}
            Take::Ask(ask) => {
                tally.calls += 1;
                let at = t + rng.below(run.max_delay + 1);
                flying.push(InFlight { replica, ask, at });
            }
        }
    }
    assert!(flying.is_empty(), "every ask answered");
    tally
}

/// The alternative set aside: counting off the request path. A replica
/// admits at once while what it last heard was left, less what it has not
/// yet had counted, stays above `replicas × BATCH`, and reports its hits in
/// batches of BATCH; nearer the end it asks, one hit per request, as leases
/// do. What it admits is counted only after the fact.
fn simulate_off_path(run: &Run) -> Tally {
    const BATCH: u64 = 10;
    struct Replica {
        known: Option<u64>,
        unsent: u64,
        sending: u64,
    }
    let mut rng = Rng(run.seed | 1);
    let mut replicas: Vec<Replica> = (0..run.replicas)
        .map(|_| Replica {
            known: None,
            unsent: 0,
            sending: 0,
        })
        .collect();
    let mut count = 0u64;
    // (replica, hits, at, a request waits on it)
    let mut flying: Vec<(usize, u64, u64, bool)> = Vec::new();
    let mut tally = Tally::default();
    let margin = run.replicas * BATCH;
    for t in 0..run.demand + run.max_delay + 1 {
        let (due, later): (Vec<_>, Vec<_>) = flying.drain(..).partition(|f| f.2 <= t);
        flying = later;
        for (i, hits, _, waits) in due {
            count += hits;
            tally.hits_counted += hits;
            let r = &mut replicas[i];
            r.known = Some(run.limit.saturating_sub(count));
            if waits {
                tally.admitted += u64::from(count <= run.limit);
            } else {
                r.sending -= hits;
            }
        }
        if t >= run.demand {
            continue;
        }
        let i = pick(run, &mut rng, t);
        let r = &mut replicas[i];
        let at = t + rng.below(run.max_delay + 1);
        let ahead = r.known.map(|k| k.saturating_sub(r.unsent + r.sending));
        if ahead.is_some_and(|a| a > margin) {
            tally.admitted += 1;
            r.unsent += 1;
            if r.unsent >= BATCH {
                tally.calls += 1;
                r.sending += r.unsent;
                flying.push((i, std::mem::take(&mut r.unsent), at, false));
            }
        } else if r.known != Some(0) {
            tally.calls += 1;
            flying.push((i, 1 + std::mem::take(&mut r.unsent), at, true));
        }
    }
    tally
}

fn rule(run: &Run) -> LeaseRule {
    LeaseRule {
        replicas: run.replicas,
        max_lease: 100,
        ask_ms: (run.max_delay + 1) * ms_per_arrival(run),
    }
}

#[test]
fn three_replicas_in_turn_admit_exactly_the_limit() {
    for (limit, demand) in [(40, 100), (300, 400), (5_000, 6_000)] {
        let run = Run {
            limit,
            replicas: 3,
            demand,
            traffic: Traffic::RoundRobin,
            max_delay: 0,
            outage: None,
            seed: 1,
        };
        let tally = simulate(&run, &rule(&run));
        assert_eq!(tally.admitted, limit, "{run:?}");
        if limit >= 5_000 {
            assert!(tally.calls * 10 < limit, "{tally:?}");
        }
    }
}

#[test]
fn an_outage_mid_run_admits_at_most_the_replicas_over_the_limit() {
    for from in [0, 5, 15, 25, 35] {
        let run = Run {
            limit: 40,
            replicas: 3,
            demand: 100,
            traffic: Traffic::RoundRobin,
            max_delay: 0,
            outage: Some((from, from + 30)),
            seed: 1,
        };
        let tally = simulate(&run, &rule(&run));
        assert!(tally.admitted <= 43, "outage from {from}: {tally:?}");
        // What the outage admitted was counted once the service was back.
        assert_eq!(
            tally.hits_counted.min(40),
            tally.admitted.min(40),
            "{tally:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the interleaving, the fleet never admits more than the
    /// limit, and it loses at most one lease's worth per replica.
    #[test]
    fn never_over_the_limit_in_any_interleaving(
        limit in 1u64..3_000,
        replicas in 1u64..12,
        extra in 0u64..3,
        max_delay in 0u64..40,
        traffic in 0u8..3,
        seed in any::<u64>(),
    ) {
        let run = Run {
            limit,
            replicas,
            demand: limit * (extra + 1) + limit / 2,
            traffic: [Traffic::RoundRobin, Traffic::Uniform, Traffic::Skewed][usize::from(traffic)],
            max_delay,
            outage: None,
            seed,
        };
        let tally = simulate(&run, &rule(&run));
        prop_assert!(tally.admitted <= limit, "{:?} {:?}", run, tally);
        let largest_lease = (limit / (8 * replicas)).clamp(1, 100);
        prop_assert!(limit - tally.admitted < largest_lease.max(2), "UNDER {:?} {:?}", run, tally);
    }
}

/// The table in docs/deployment.md ("Running a fleet").
#[test]
#[ignore = "prints the fleet table; run with --ignored --nocapture"]
fn fleet_table() {
    println!("| limit/h | traffic | over | under | calls per request | over, outage from 25 % to 75 % of the demand | counting off the path: over, calls per request |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for limit in [40, 400, 4_000, 40_000, 100_000] {
        for traffic in [Traffic::Uniform, Traffic::Skewed] {
            let run = Run {
                limit,
                replicas: 100,
                demand: limit * 2,
                traffic,
                max_delay: 50,
                outage: None,
                seed: 7,
            };
            let t = simulate(&run, &rule(&run));
            let outage = Run {
                outage: Some((run.limit / 2, run.limit * 3 / 2)),
                ..run
            };
            let o = simulate(&outage, &rule(&outage));
            let a = simulate_off_path(&run);
            let per_request = |calls: u64| calls as f64 / run.demand as f64;
            println!(
                "| {limit} | {traffic:?} | {} | {} | {:.4} | {} | {}, {:.4} |",
                t.admitted.saturating_sub(limit),
                limit.saturating_sub(t.admitted),
                per_request(t.calls),
                o.admitted.saturating_sub(limit),
                a.admitted.saturating_sub(limit),
                per_request(a.calls),
            );
        }
    }
}
