//! Consumer groups against the real binary: committed offsets through a SIGKILL, the CLI as a
//! group member (share, commit, resume), describe with lag, reset by offset and by time, and
//! group deletion (CLI, forwarding between shards, through a SIGKILL).

mod broker_common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use broker_common::{config, poll_until, Broker};
use ringmq::client::{Client, Message, ProducerConfig, QueueSelector};
use ringmq::protocol::group::{GroupRequest, GroupResponse, ResetTo};
use ringmq::protocol::{Request, Response, SendStatus};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("ringmq-groups").tempdir().unwrap()
}

/// A broker of two shards in sync flush mode, with topic "t" of 4 queues, a client, and the
/// config to start it again.
fn sync_broker_with_topic(dir: &std::path::Path) -> (Broker, Client, String) {
    let cfg = config(dir, 2, "", "flush_mode = \"sync\"");
    let broker = Broker::start_in(dir, &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 4).unwrap();
    (broker, client, cfg)
}

fn cli(broker: &Broker, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .args(["--broker", &broker.addr()])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Sends `n` messages with bodies `{prefix}{i}`, spread over the topic's queues.
fn produce(client: &Client, topic: &str, prefix: &str, n: usize) {
    let producer = client
        .producer(ProducerConfig { selector: QueueSelector::RoundRobin, ..Default::default() })
        .unwrap();
    let pending: Vec<_> = (0..n)
        .map(|i| producer.send_async(Message::new(topic, format!("{prefix}{i}"))).unwrap())
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    producer.close().unwrap();
}

/// Bodies printed by `ringmq consume` (last column).
fn bodies(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|l| l.rsplit('\t').next()).map(str::to_owned).collect()
}

#[test]
fn acknowledged_commits_survive_a_sigkill_with_sync_flush() {
    let dir = tempdir();
    let (mut broker, client, cfg) = sync_broker_with_topic(dir.path());
    let groups = client.groups();
    // Enough groups that both shards coordinate some.
    let mut expected = BTreeMap::new();
    for g in 0..12 {
        let group = format!("g{g}");
        for round in 1..=3u64 {
            let offsets: Vec<(String, u32, u64)> =
                (0..4).map(|q| ("t".to_string(), q, round * 100 + g * 10 + u64::from(q))).collect();
            assert_eq!(groups.commit(&group, 0, &offsets).unwrap(), SendStatus::SendOk);
            expected.insert(group.clone(), offsets);
        }
    }
    broker.kill();
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let groups = client.groups();
    for (group, offsets) in &expected {
        let got = groups.committed(group, &[]).unwrap();
        let want: Vec<(String, u32, Option<u64>)> =
            offsets.iter().map(|(t, q, o)| (t.clone(), *q, Some(*o))).collect();
        assert_eq!(&got, &want, "{group}");
    }
    let listed = groups.list().unwrap();
    assert_eq!(listed.len(), 12);
    assert!(listed.iter().all(|g| g.committed_queues == 4 && g.members == 0));
}

#[test]
fn the_cli_consumes_as_a_group_resumes_from_its_commits_and_resets() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 8).unwrap();
    produce(&client, "t", "a", 200);

    let consume = ["consume", "--topic", "t", "--group", "g"];
    let (ok, out, err) = cli(&broker, &consume);
    assert!(ok, "{err}");
    let mut got = bodies(&out);
    got.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("a{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // A second run resumes from the committed offsets: nothing new to print.
    let (ok, out, err) = cli(&broker, &consume);
    assert!(ok, "{err}");
    assert_eq!(out, "");

    let (ok, out, _) = cli(&broker, &["group", "describe", "g"]);
    assert!(ok);
    assert!(out.contains("total lag 0"), "{out}");
    let cut = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    produce(&client, "t", "b", 10);
    let (_, out, _) = cli(&broker, &["group", "describe", "g"]);
    assert!(out.contains("total lag 10"), "{out}");
    let (ok, out, _) = cli(&broker, &["group", "list"]);
    assert!(ok && out.lines().any(|l| l.starts_with("g\t0\t")), "{out}");

    // Reset to a time: only what was stored after it comes again.
    let at = humantime::format_rfc3339_millis(cut).to_string();
    let (ok, _, err) = cli(&broker, &["group", "reset", "g", "--topic", "t", "--to", &at]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&broker, &consume);
    assert!(ok, "{err}");
    let mut got = bodies(&out);
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // Reset to the earliest: everything again.
    let (ok, out, _) = cli(&broker, &["group", "reset", "g", "--topic", "t", "--to", "earliest"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 8, "one line per queue: {out}");
    let (_, out, _) = cli(&broker, &consume);
    assert_eq!(bodies(&out).len(), 210);
    let (ok, _, err) = cli(&broker, &["group", "reset", "g", "--topic", "t", "--to", "yesterday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
}

#[test]
fn deleted_groups_lose_their_offsets_through_a_sigkill_and_live_ones_are_refused() {
    let dir = tempdir();
    let (mut broker, client, cfg) = sync_broker_with_topic(dir.path());
    let groups = client.groups();
    // Enough groups that both shards coordinate some.
    let names: Vec<String> = (0..8).map(|g| format!("g{g}")).collect();
    let offsets: Vec<(String, u32, u64)> = (0..4).map(|q| ("t".to_string(), q, 10)).collect();
    for g in &names {
        groups.commit(g, 0, &offsets).unwrap();
    }
    let sub = [("t".to_string(), "*".to_string())];
    groups.heartbeat("g0", "member-a", "", &sub).unwrap();

    let (ok, _, err) = cli(&broker, &["group", "delete", "g0"]);
    assert!(!ok && err.contains("GROUP_NOT_EMPTY") && err.contains("live member"), "{err}");
    let (ok, out, err) = cli(&broker, &["group", "delete", "g1"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "group g1 deleted: committed offsets of 4 queue(s) removed");
    assert_eq!(client.admin().delete_group("g2").unwrap(), 4);
    // Through the shared port: each shard forwards to the group's coordinator.
    for g in &names[3..] {
        let r = client
            .router()
            .call_bootstrap(&Request::Group(GroupRequest::Delete { group: g.clone() }));
        assert!(matches!(r, Ok(Response::Group(GroupResponse::Delete { removed: 4 }))), "{r:?}");
    }
    let (ok, out, _) = cli(&broker, &["group", "delete", "never-committed"]);
    assert!(ok && out.contains("of 0 queue(s)"), "{out}");

    broker.kill();
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    let groups = client.groups();
    assert_eq!(groups.committed("g0", &[]).unwrap().len(), 4, "refused: kept");
    for g in &names[1..] {
        assert_eq!(groups.committed(g, &[]).unwrap(), vec![], "{g}");
    }
    let listed: Vec<String> = groups.list().unwrap().into_iter().map(|g| g.group).collect();
    assert_eq!(listed, ["g0"]);
}

fn follow(broker: &Broker) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["consume", "--topic", "t", "--group", "shared", "--follow", "--broker"])
        .arg(broker.addr())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
fn two_following_members_share_the_queues_and_commit_on_sigterm() {
    let dir = tempdir();
    let broker = Broker::start_in(dir.path(), &config(dir.path(), 2, "", ""));
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 8).unwrap();
    let groups = client.groups();
    let a = follow(&broker);
    let b = follow(&broker);
    // Both joined, and each took its share (a member rebalances within a heartbeat).
    poll_until(Duration::from_secs(30), || {
        let d = groups.describe("shared").ok()?;
        (d.members.len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    produce(&client, "t", "m", 400);
    poll_until(Duration::from_secs(60), || {
        let d = groups.describe("shared").ok()?;
        (d.total_lag == 0 && d.queues.iter().all(|q| q.committed.is_some())).then_some(())
    });
    let mut outputs = Vec::new();
    for child in [a, b] {
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        outputs.push(bodies(&String::from_utf8_lossy(&out.stdout)));
    }
    assert!(!outputs[0].is_empty() && !outputs[1].is_empty(), "both consumed");
    let mut all: Vec<String> = outputs.concat();
    all.sort();
    let mut want: Vec<String> = (0..400).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "every message exactly once between the two");
    // Both left: no members, offsets kept.
    let (version, members) = groups.members("shared").unwrap();
    assert_eq!((version, members.len()), (0, 0));
    let reset = groups.reset("shared", "t", ResetTo::Latest).unwrap();
    assert_eq!(reset.iter().map(|(_, o)| o).sum::<u64>(), 400);
}

#[test]
fn group_list_pages_through_every_shard_s_groups_within_a_small_frame() {
    use ringmq::protocol::group::{group_summary_bytes, LIST_GROUPS_ANSWER_FIXED_BYTES};
    const FRAME: usize = 65536;
    let dir = tempdir();
    let broker_knobs = format!("max_frame_bytes = {FRAME}\nmax_fetch_bytes = 32768");
    let cfg = config(dir.path(), 3, &broker_knobs, "max_batch_bytes = 32768");
    let broker = Broker::start_in(dir.path(), &cfg);
    let client = Client::connect(&broker.addr()).unwrap();
    client.admin().create_topic("t", 1).unwrap();
    let groups = client.groups();
    // 600 groups of 240-byte names, over the three coordinators: about 154 KB of answer, three
    // frames' worth.
    let mut want: Vec<String> =
        (0..600).map(|i| format!("grp-{:04}-{}", (i * 7919) % 600, "x".repeat(231))).collect();
    for g in &want {
        groups.commit(g, 0, &[("t".to_string(), 0, 1)]).unwrap();
    }
    want.sort();

    // Page by page: each within the frame, the next after the last one listed.
    let mut listed = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (page, more) = groups.list_page(&after).unwrap();
        let bytes: usize = page.iter().map(|g| group_summary_bytes(&g.group)).sum();
        assert!(LIST_GROUPS_ANSWER_FIXED_BYTES + 1 + bytes <= FRAME, "page {pages}: {bytes}");
        pages += 1;
        listed.extend(page.into_iter().map(|g| g.group));
        if !more {
            break;
        }
        after = listed.last().unwrap().clone();
        assert!(pages < 100, "paging did not end");
    }
    assert!(pages >= 3, "{pages} pages");
    assert!(listed == want, "{} listed of {}, in order once each", listed.len(), want.len());
    let all: Vec<String> = groups.list().unwrap().into_iter().map(|g| g.group).collect();
    assert!(all == want);

    // A client before paging (no `after`) gets the first page, not FRAME_TOO_LARGE.
    let old = Request::Group(GroupRequest::ListGroups { after: None });
    let r = client.router().call_bootstrap(&old);
    let Ok(Response::Group(GroupResponse::ListGroups { groups: first, more: None })) = r else {
        panic!("{r:?}")
    };
    assert!(!first.is_empty() && first.len() < want.len(), "{}", first.len());
    assert_eq!(first[0].group, want[0]);

    // The CLI prints every group once, in order.
    let (ok, out, err) = cli(&broker, &["group", "list"]);
    assert!(ok, "{err}");
    let printed: Vec<&str> = out.lines().skip(1).filter_map(|l| l.split('\t').next()).collect();
    assert!(printed == want, "{} printed of {}", printed.len(), want.len());
}
