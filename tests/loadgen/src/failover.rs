//! The `failover` mode: how long a replicated stream stays unable to acknowledge a publish
//! after its leader is SIGKILLed (issue 22's benchmark: "failover time, leader SIGKILL →
//! first successful publish").
//!
//! Given every member of a JetStream cluster (`--member NAME,PID,HOST:PORT`, processes the
//! caller started), loadgen creates stream `--stream` (subjects `failover.>`) with
//! `--replicas`, waits (bounded) until a publish is acknowledged, asks `STREAM.INFO` which
//! member leads the stream, connects to another member, SIGKILLs the leader and publishes
//! from then on, each publish waiting at most `--attempt-ms` for its PubAck, until one is
//! acknowledged: the time from the kill to that PubAck is the row's `ms`. `STREAM.INFO`
//! afterwards names the new leader. The killed process is the caller's to reap and restart.

use super::*;
use async_nats::jetstream::{self, stream};

use crate::args::num;

/// `loadgen failover` options.
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// A member of the cluster: `NAME,PID,HOST:PORT` (its server name, the PID of the
    /// process loadgen may SIGKILL, its client address); one per member.
    #[arg(long = "member", required = true)]
    members: Vec<String>,
    /// The stream (created, replacing one of that name).
    #[arg(long, default_value = "FAILOVER")]
    stream: String,
    /// Its `num_replicas`.
    #[arg(long, default_value = "3", value_parser = num::<usize>)]
    replicas: usize,
    /// Longest wait for one PubAck after the kill before publishing again (ms).
    #[arg(long, default_value = "250", value_parser = num::<u64>)]
    attempt_ms: u64,
    /// Upper bound on the whole failover (s).
    #[arg(long, default_value = "60", value_parser = num::<u64>)]
    timeout: u64,
    /// The server's name in the record.
    #[arg(long, default_value = "")]
    server: String,
}

/// One member: its name, PID and client address.
struct Member {
    name: String,
    pid: i32,
    addr: String,
}

/// Parses `NAME,PID,HOST:PORT`.
fn member(spec: &str) -> Result<Member> {
    let mut parts = spec.splitn(3, ',');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(pid), Some(addr)) if !name.is_empty() && !addr.is_empty() => Ok(Member {
            name: name.to_owned(),
            pid: pid
                .parse()
                .map_err(|_| format!("--member {spec:?}: bad PID {pid:?}"))?,
            addr: addr.to_owned(),
        }),
        _ => Err(format!("--member {spec:?}: expected NAME,PID,HOST:PORT").into()),
    }
}

/// `loadgen failover`.
pub fn run(args: &Args) -> Result<()> {
    let members = args
        .members
        .iter()
        .map(|m| member(m))
        .collect::<Result<Vec<_>>>()?;
    if members.len() < 2 {
        return Err("failover needs at least two --member".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(args.timeout);
    let outcome = rt.block_on(async {
        tokio::time::timeout(limit, failover(args, &members))
            .await
            .map_err(|_| -> Error { format!("no failover within {limit:?}").into() })?
    })?;
    let record = serde_json::json!({
        "mode": "failover", "row": "failover", "server": args.server,
        "replicas": args.replicas, "ms": outcome.ms, "attempts": outcome.attempts,
        "old_leader": outcome.old_leader, "new_leader": outcome.new_leader,
    });
    let human = format!(
        "failover  {:12} R{}: leader {} SIGKILLed, first PubAck after {:.0} ms ({} attempts), new leader {}",
        args.server,
        args.replicas,
        outcome.old_leader,
        outcome.ms,
        outcome.attempts,
        outcome.new_leader
    );
    emit(record, &human);
    Ok(())
}

/// What one failover measured.
struct Outcome {
    /// From the SIGKILL to the first PubAck, in ms.
    ms: f64,
    /// Publishes sent until one was acknowledged.
    attempts: u64,
    /// The member killed.
    old_leader: String,
    /// The member leading afterwards.
    new_leader: String,
}

/// Connects to `addr` (`HOST:PORT`).
async fn connect(addr: &str) -> Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(format!("nats://{addr}"))
        .await?)
}

/// The leader of `stream` as `STREAM.INFO` names it, once it names one.
async fn leader_of(ctx: &jetstream::Context, stream: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = ctx.get_stream(stream).await {
            if let Ok(info) = s.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    if !leader.is_empty() {
                        return Ok(leader);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("STREAM.INFO {stream} named no leader").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes one message; true if it was acknowledged within `wait`.
async fn publish_once(ctx: &jetstream::Context, wait: Duration) -> bool {
    let attempt = async { ctx.publish("failover.s", "x".into()).await?.await };
    matches!(tokio::time::timeout(wait, attempt).await, Ok(Ok(_)))
}

async fn failover(args: &Args, members: &[Member]) -> Result<Outcome> {
    let first = jetstream::new(connect(&members[0].addr).await?);
    let _ = first.delete_stream(&args.stream).await;
    let config = stream::Config {
        name: args.stream.clone(),
        subjects: vec!["failover.>".to_owned()],
        num_replicas: args.replicas,
        ..Default::default()
    };
    // A new cluster elects its meta and stream leaders first: retry until a PubAck.
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        if first.get_or_create_stream(config.clone()).await.is_ok()
            && publish_once(&first, Duration::from_secs(2)).await
        {
            break;
        }
        if Instant::now() > ready {
            return Err(format!("stream {} never acknowledged a publish", args.stream).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_leader = leader_of(&first, &args.stream).await?;
    let victim = members
        .iter()
        .find(|m| m.name == old_leader)
        .ok_or_else(|| format!("the leader {old_leader:?} is none of the --member names"))?;
    let survivor = members
        .iter()
        .find(|m| m.name != old_leader)
        .ok_or("no member besides the leader")?;
    let ctx = jetstream::new(connect(&survivor.addr).await?);
    // The survivor's client works before the kill (interest and routes are up).
    if !publish_once(&ctx, Duration::from_secs(5)).await {
        return Err(format!("{} does not acknowledge before the kill", survivor.name).into());
    }
    let wait = Duration::from_millis(args.attempt_ms.max(1));
    let t0 = Instant::now();
    // SAFETY: kill(2) with a PID the caller gave us as one of its own processes.
    if unsafe { libc::kill(victim.pid, libc::SIGKILL) } != 0 {
        return Err(format!("kill {}: {}", victim.pid, std::io::Error::last_os_error()).into());
    }
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let sent = Instant::now();
        if publish_once(&ctx, wait).await {
            break;
        }
        // A refusal comes back at once (no responders, 10008): pace the retries.
        if let Some(rest) = wait.checked_sub(sent.elapsed()) {
            tokio::time::sleep(rest.min(Duration::from_millis(20))).await;
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let new_leader = leader_of(&ctx, &args.stream).await.unwrap_or_default();
    Ok(Outcome {
        ms,
        attempts,
        old_leader,
        new_leader,
    })
}
