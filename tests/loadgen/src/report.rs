//! The `report` subcommand: JSON lines in, Markdown table out.

use super::*;

/// `loadgen report` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// The file of JSON lines (one per run).
    file: Option<String>,
    /// The server the others are compared with.
    #[arg(long, default_value = "nats-server")]
    baseline: String,
}

/// Which direction of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    /// Bigger numbers are better (throughput).
    Higher,
    /// Smaller numbers are better (latency, memory, size).
    Lower,
}

/// One table row: label, record `row` key, field, direction, display scale,
/// target ratio (ours/baseline) and which servers the target applies to.
struct RowSpec {
    /// Label in the table.
    label: &'static str,
    /// Value of the record's `row` field.
    row: &'static str,
    /// Numeric field of the record.
    field: &'static str,
    /// Which direction is better.
    better: Better,
    /// Divisor applied before display.
    scale: f64,
    /// Target ratio ours/baseline, if there is one.
    target: Option<f64>,
    /// Servers the target applies to (empty: all).
    target_for: &'static [&'static str],
}

/// Shorthand constructor for [`RowSpec`].
const fn spec(
    label: &'static str,
    row: &'static str,
    field: &'static str,
    better: Better,
    scale: f64,
    target: Option<f64>,
    target_for: &'static [&'static str],
) -> RowSpec {
    RowSpec {
        label,
        row,
        field,
        better,
        scale,
        target,
        target_for,
    }
}

/// Uplink replay target: at least this many messages per second.
const UPLINK_TARGET_RATE: f64 = 100_000.0;

/// Uplink replay target: at least this many times the nats-server way's rate.
const UPLINK_TARGET_RATIO: f64 = 2.0;

/// The rows of the table, in order.
const ROWS: &[RowSpec] = &[
    spec(
        "startup to first INFO (ms)",
        "startup",
        "ms",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "idle RSS (MiB)",
        "idle_rss",
        "kib",
        Better::Lower,
        1024.0,
        Some(1.0 / 3.0),
        &["leafd"],
    ),
    spec(
        "pub 16 B (M msgs/s)",
        "pub/16",
        "msgs_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "pub 128 B (M msgs/s)",
        "pub/128",
        "msgs_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "pubsub 1 sub 16 B (M deliveries/s)",
        "pubsub1/16",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "pubsub 1 sub 128 B (M deliveries/s)",
        "pubsub1/128",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "pubsub 4 subs 16 B (M deliveries/s)",
        "pubsub4/16",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "pubsub 4 subs 128 B (M deliveries/s)",
        "pubsub4/128",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "req/rep 16 B p50 (us)",
        "reqrep/16",
        "p50_us",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "req/rep 16 B p90 (us)",
        "reqrep/16",
        "p90_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "req/rep 16 B p99 (us)",
        "reqrep/16",
        "p99_us",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "JS sync publish 128 B (k msgs/s) †",
        "js-sync/128",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        None,
        &[],
    ),
    spec(
        "JS sync publish 128 B, ack p50 (us) †",
        "js-sync/128",
        "p50_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "JS sync publish 128 B, ack p99 (us) †",
        "js-sync/128",
        "p99_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "append 128 B + fdatasync on the stores' disk, p50 (us) ◇",
        "fsync/128",
        "p50_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "append 128 B + fdatasync on the stores' disk, p99 (us) ◇",
        "fsync/128",
        "p99_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "JS async publish 128 B, 256 in flight (k msgs/s) †",
        "js-async/128",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        None,
        &[],
    ),
    spec(
        "leaf link pub 128 B, leaf→hub (M deliveries/s) ‡",
        "leafpub/128",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "leaf link req/rep 128 B p50 (us) ‡",
        "leafrr/128",
        "p50_us",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "leaf link req/rep 128 B p90 (us) ‡",
        "leafrr/128",
        "p90_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "leaf link req/rep 128 B p99 (us) ‡",
        "leafrr/128",
        "p99_us",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "cluster pub 16 B, node A→B (M deliveries/s) ◊",
        "clusterpub/16",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "cluster pub 128 B, node A→B (M deliveries/s) ◊",
        "clusterpub/128",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "cluster req/rep 16 B p50 (us) ◊",
        "clusterrr/16",
        "p50_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "cluster req/rep 16 B p99 (us) ◊",
        "clusterrr/16",
        "p99_us",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "R3 JS async publish 128 B, 256 in flight (k msgs/s) ◈",
        "jsc-async/128",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        Some(1.0),
        &[],
    ),
    spec(
        "R3 JS sync publish 128 B, ack p50 (us) ◈",
        "jsc-sync/128",
        "p50_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "R3 JS sync publish 128 B, ack p99 (us) ◈",
        "jsc-sync/128",
        "p99_us",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "R3 stream read by a pull consumer, 128 B (k msgs/s) ◈",
        "jsc-async/128-pull",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        None,
        &[],
    ),
    spec(
        "R3 stream leader SIGKILLed → first PubAck (ms) ◈",
        "failover",
        "ms",
        Better::Lower,
        1.0,
        Some(1.0),
        &[],
    ),
    spec(
        "restart after SIGKILL, 1M-msg store: first INFO (ms)",
        "recovery",
        "ms",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "restart after SIGKILL, 1M-msg store: STREAM.INFO served (ms)",
        "recovery",
        "js_ms",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "restart after SIGKILL, 1M-msg store: first PubAck (ms)",
        "recovery",
        "pub_ms",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "Store::open after SIGKILL, 1M msgs (ms, store test)",
        "store_open",
        "ms",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "uplink backlog fill, JS async publish 128 B (k msgs/s) §",
        "uplink-fill",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        None,
        &[],
    ),
    spec(
        "uplink replay of the backlog to the hub (k msgs/s) §",
        "uplink",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        Some(UPLINK_TARGET_RATIO),
        &[],
    ),
    spec(
        "uplink replay: seconds from link up §",
        "uplink",
        "secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "uplink replay: seconds from hub start §",
        "uplink",
        "secs_from_start",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "uplink replay: leaf RSS at link up (MiB) §",
        "uplink",
        "rss_start_kib",
        Better::Lower,
        1024.0,
        None,
        &[],
    ),
    spec(
        "uplink replay: leaf RSS max during replay (MiB) §",
        "uplink",
        "rss_max_kib",
        Better::Lower,
        1024.0,
        None,
        &[],
    ),
    spec(
        "uplink replay: leaf CPU (s) §",
        "uplink",
        "leaf_cpu_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "uplink replay: hub CPU (s) §",
        "uplink",
        "hub_cpu_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "accounts: pubsub 1 sub 128 B, 2 accounts (M deliveries/s) ¶",
        "acc-pubsub1/128",
        "deliveries_per_sec",
        Better::Higher,
        1e6,
        Some(1.2),
        &[],
    ),
    spec(
        "accounts: hub RSS, 10 accounts, no leaf yet (MiB) ¶",
        "acc-hub-rss",
        "idle_kib",
        Better::Lower,
        1024.0,
        None,
        &[],
    ),
    spec(
        "accounts: hub RSS, 1,000 leaf connections in 10 accounts (MiB) ¶",
        "acc-hub-rss",
        "kib",
        Better::Lower,
        1024.0,
        Some(1.0),
        &["hubd"],
    ),
    spec(
        "accounts: 1,000 leaf connections established in (s) ¶",
        "acc-leaves",
        "connect_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 1,000 gateways x 500 msgs, hub ingest (k msgs/s)",
        "fleet-1000",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        Some(1.2),
        &["hubd"],
    ),
    spec(
        "fleet: 1,000 gateways, all stored in (s)",
        "fleet-1000",
        "replay_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 1,000 gateways, hub RSS per gateway link (KiB)",
        "fleet-1000-rss",
        "per_gw_kib",
        Better::Lower,
        1.0,
        Some(1.0),
        &["hubd"],
    ),
    spec(
        "fleet: 1,000 gateways reconnecting after a hub restart, all back in (s)",
        "fleet-1000",
        "storm_all_back_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 1,000 gateways reconnecting, attempts refused once the hub was up",
        "fleet-1000",
        "storm_refused_after_hub_up",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 1,000 gateways reconnecting, restarted hub's peak RSS (MiB)",
        "fleet-1000-storm",
        "peak_kib",
        Better::Lower,
        1024.0,
        Some(1.0),
        &["hubd"],
    ),
    spec(
        "fleet: 10,000 gateways x 500 msgs, hub ingest (k msgs/s)",
        "fleet-10000",
        "msgs_per_sec",
        Better::Higher,
        1e3,
        Some(1.2),
        &["hubd"],
    ),
    spec(
        "fleet: 10,000 gateways, all stored in (s)",
        "fleet-10000",
        "replay_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 10,000 gateways, hub RSS per gateway link (KiB)",
        "fleet-10000-rss",
        "per_gw_kib",
        Better::Lower,
        1.0,
        Some(1.0),
        &["hubd"],
    ),
    spec(
        "fleet: 10,000 gateways reconnecting after a hub restart, all back in (s)",
        "fleet-10000",
        "storm_all_back_secs",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 10,000 gateways reconnecting, attempts refused once the hub was up",
        "fleet-10000",
        "storm_refused_after_hub_up",
        Better::Lower,
        1.0,
        None,
        &[],
    ),
    spec(
        "fleet: 10,000 gateways reconnecting, restarted hub's peak RSS (MiB)",
        "fleet-10000-storm",
        "peak_kib",
        Better::Lower,
        1024.0,
        Some(1.0),
        &["hubd"],
    ),
    spec(
        "peak RSS (MiB)",
        "peak_rss",
        "kib",
        Better::Lower,
        1024.0,
        None,
        &[],
    ),
    spec(
        "binary size, stripped (MiB)",
        "binary",
        "bytes",
        Better::Lower,
        1048576.0,
        Some(0.5),
        &["leafd"],
    ),
];

/// Median of `v` (sorts it); `None` if empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => v.get(n / 2).copied(),
        _ => Some((v.get(n / 2 - 1)? + v.get(n / 2)?) / 2.0),
    }
}

/// Formats a number with a precision suited to its magnitude.
fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `loadgen report FILE [--baseline NAME]`.
pub fn run(args: &Args) -> Result<()> {
    let Some(path) = &args.file else {
        return Err("report: FILE missing".into());
    };
    let baseline = args.baseline.clone();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;

    // Servers in order of first appearance.
    let mut servers: Vec<String> = Vec::new();
    for r in &records {
        if let Some(s) = r.get("server").and_then(|s| s.as_str()) {
            if !s.is_empty() && !servers.iter().any(|x| x == s) {
                servers.push(s.to_owned());
            }
        }
    }
    let has_base = servers.contains(&baseline);

    // (server, row, field) -> values
    let mut values: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    for r in &records {
        let server = r.get("server").and_then(|v| v.as_str()).unwrap_or_default();
        let row = r.get("row").and_then(|v| v.as_str()).unwrap_or_default();
        if let Some(obj) = r.as_object() {
            for (k, v) in obj {
                if let Some(x) = v.as_f64() {
                    values
                        .entry((server.to_owned(), row.to_owned(), k.clone()))
                        .or_default()
                        .push(x);
                }
            }
        }
        let lost = r.get("lost").and_then(|v| v.as_u64()).unwrap_or(0);
        let errors: Vec<&str> = r
            .get("errors")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
            .unwrap_or_default();
        let error = r.get("error").and_then(|v| v.as_str());
        if lost > 0 || !errors.is_empty() || error.is_some() {
            let mut note = format!("{server} {row}:");
            if lost > 0 {
                let exp = r.get("expected").and_then(|v| v.as_u64()).unwrap_or(0);
                note.push_str(&format!(" lost {lost} of {exp}"));
            }
            if !errors.is_empty() {
                note.push_str(&format!(" ({})", errors.join("; ")));
            }
            if let Some(e) = error {
                note.push_str(&format!(" {e}"));
            }
            notes.push(note);
        }
    }

    let get = |server: &str, spec: &RowSpec| -> Option<f64> {
        let mut v = values
            .get(&(
                server.to_owned(),
                spec.row.to_owned(),
                spec.field.to_owned(),
            ))?
            .clone();
        median(&mut v).map(|m| m / spec.scale)
    };

    let mut header = String::from("| metric |");
    let mut rule = String::from("|---|");
    for s in &servers {
        header.push_str(&format!(" {s} |"));
        rule.push_str("---:|");
        if has_base && *s != baseline {
            header.push_str(&format!(" {s} / {baseline} |"));
            rule.push_str("---:|");
        }
    }
    println!("{header}");
    println!("{rule}");
    for spec in ROWS {
        let mut line = format!("| {} |", spec.label);
        let base = get(&baseline, spec);
        for s in &servers {
            let v = get(s, spec);
            line.push_str(&format!(" {} |", v.map_or("n/a".into(), fmt_num)));
            if has_base && *s != baseline {
                let cell = match (v, base) {
                    (Some(v), Some(b)) if b > 0.0 && v.is_finite() => {
                        let ratio = v / b;
                        let applies =
                            spec.target_for.is_empty() || spec.target_for.iter().any(|t| t == s);
                        let mark = match (spec.target, applies) {
                            (Some(t), true) => {
                                let ok = match spec.better {
                                    Better::Higher => ratio >= t,
                                    Better::Lower => ratio <= t,
                                };
                                if ok {
                                    " ok"
                                } else {
                                    " MISS"
                                }
                            }
                            _ => "",
                        };
                        format!("{ratio:.2}x{mark}")
                    }
                    _ => "n/a".into(),
                };
                line.push_str(&format!(" {cell} |"));
            }
        }
        println!("{line}");
    }
    let has_row = |row: &str| values.keys().any(|(_, r, _)| r == row);
    if has_row("js-sync/128") || has_row("js-async/128") {
        println!();
        println!(
            "† nats-server 2.9 acknowledges a JetStream publish before any fsync; leafd and \
             hubd send the PubAck only after the commit holding the message is fsynced. \
             These ratios compare a durable server with a non-durable one."
        );
    }
    if has_row("fsync/128") {
        // Issue 24's target for a durable sync publish: its PubAck p50 within 1.2x of the
        // machine's fsync latency, both measured in this run (each column's own fsync
        // figure, taken just before that server's JetStream rows on the same disk).
        let median_of = |server: &str, row: &str, field: &str| {
            let mut v = values
                .get(&(server.to_owned(), row.to_owned(), field.to_owned()))?
                .clone();
            median(&mut v)
        };
        let ratios: Vec<String> = servers
            .iter()
            .filter(|s| **s != baseline)
            .filter_map(|s| {
                let ack = median_of(s, "js-sync/128", "p50_us")?;
                let fsync = median_of(s, "fsync/128", "p50_us")?;
                let ratio = ack / fsync;
                let mark = if ratio <= 1.2 { "ok" } else { "MISS" };
                Some(format!("{s} {ratio:.2}x {mark}"))
            })
            .collect();
        println!();
        println!(
            "◇ The floor under a publish acknowledged after an fsync: loadgen appends 128 B to a \
             file next to the column's store and fdatasyncs it, just before that server's \
             JetStream rows. JS sync publish ack p50 / this p50 (target ≤ 1.2x): {}.",
            if ratios.is_empty() {
                "n/a".to_owned()
            } else {
                ratios.join(", ")
            }
        );
    }
    if has_row("leafpub/128") || has_row("leafrr/128") {
        println!();
        println!(
            "‡ Leaf link rows are pairs, leaf → hub: column nats-server = nats-server → \
             nats-server, leafd = leafd → nats-server, hubd = leafd → hubd. Publisher and \
             requester on the leaf, subscriber and responder on the hub."
        );
    }
    if has_row("jsc-async/128") || has_row("failover") {
        println!();
        println!(
            "◈ JetStream cluster rows: 3 nodes of the column's server (routes between all, \
             JetStream on each), a stream with num_replicas 3, the client on the first node. \
             nats-server acknowledges once a quorum has the message in its log, without fsync; \
             hubd once a quorum has it fsynced. The pull row reads the stream back through an \
             ephemeral pull consumer (no acks). Failover: the stream leader SIGKILLed, the \
             time to the first PubAck through another node (publishes retried every ≤ 250 ms)."
        );
    }
    if has_row("clusterpub/16") || has_row("clusterrr/16") {
        println!();
        println!(
            "◊ Cluster rows: a 2-node cluster of the column's server (routes between them), \
             publisher and requester on node A, subscriber and responder on node B; no leafd \
             column (leafd does not cluster)."
        );
    }
    if has_row("uplink") {
        let backlog = records
            .iter()
            .filter(|r| r.get("row").and_then(|v| v.as_str()) == Some("uplink"))
            .find_map(|r| r.get("msgs").and_then(|v| v.as_u64()))
            .unwrap_or(0);
        let rates: Vec<String> = servers
            .iter()
            .filter(|s| **s != baseline)
            .filter_map(|s| {
                let mut v = values
                    .get(&(s.clone(), "uplink".into(), "msgs_per_sec".into()))?
                    .clone();
                let rate = median(&mut v)?;
                let mark = if rate >= UPLINK_TARGET_RATE {
                    "ok"
                } else {
                    "MISS"
                };
                Some(format!("{s} {:.1} k {mark}", rate / 1e3))
            })
            .collect();
        println!();
        println!(
            "§ Uplink rows: a backlog of {backlog} × 128 B stored on the leaf while its hub \
             is down, replayed into hub stream HUB once the hub starts; seconds and msgs/s \
             from the leaf link coming up. Pairs as ‡; the nats-server column is the \
             nats-server way: a leaf with a JetStream domain, its stream sourced by the \
             hub's stream. Targets: ≥ {:.0} k msgs/s ({}) and ≥ {UPLINK_TARGET_RATIO}× the \
             nats-server way; the leaf's RSS flat during the replay.",
            UPLINK_TARGET_RATE / 1e3,
            if rates.is_empty() {
                "n/a".to_owned()
            } else {
                rates.join(", ")
            }
        );
    }
    if has_row("acc-pubsub1/128") || has_row("acc-hub-rss") {
        println!();
        println!(
            "¶ Accounts rows, every server with the same config file. pubsub: accounts A and \
             B; publisher and subscriber log in as a user of A, a user of B subscribes to the \
             same subject (and must receive nothing). Hub RSS: 10 accounts, 10 leafnode users \
             each bound to one of them; 1,000 raw leafnode connections (`loadgen leaves`, 100 \
             per account, one LS+ each), VmRSS read once all are established. The RSS \
             rows have hub columns only (nats-server, hubd)."
        );
    }
    if !notes.is_empty() {
        println!();
        println!("Problems seen during the run:");
        println!();
        for n in notes {
            println!("- {n}");
        }
    }
    Ok(())
}
