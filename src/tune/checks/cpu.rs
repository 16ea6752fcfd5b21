//! The CPU rules of `ringmq tune check`: frequency governor, guest halt polling, shards
//! against usable CPUs, NUMA placement.

use super::*;

/// guest_halt_poll_ns of the haltpoll cpuidle governor: the kernel's own default, which some
/// hosts turn off on their guests' command line (`haltpoll.guest_halt_poll_ns=0`).
pub const GUEST_HALT_POLL_NS: u64 = 200_000;

pub(super) fn check_governor(facts: &Facts) -> Finding {
    let name = "CPU frequency governor";
    let governors = match &facts.governors {
        Err(e) => {
            return finding(Severity::Info, name, "unknown", "performance", e.clone());
        }
        Ok(g) => g,
    };
    let current = governors
        .iter()
        .map(|(g, cpus)| format!("{g} ({} CPUs)", cpus.len()))
        .collect::<Vec<_>>()
        .join(", ");
    let (severity, why) = if governors.keys().all(|g| g == "performance") {
        (Severity::Ok, "shard cores run at full clock")
    } else if governors.contains_key("powersave") {
        (
            Severity::Warn,
            "powersave keeps cores at low clocks (or, with intel_pstate, trades latency for \
             power): every request takes longer",
        )
    } else {
        (
            Severity::Info,
            "a shard that was idle runs its first requests at a low clock until the governor \
             ramps up: p99 latency after quiet periods",
        )
    };
    finding(severity, name, current, "performance", why)
}

pub(super) fn check_halt_poll(facts: &Facts) -> Finding {
    let name = "haltpoll guest_halt_poll_ns (KVM guests)";
    let recommended = GUEST_HALT_POLL_NS.to_string();
    let polls = match &facts.guest_halt_poll_ns {
        Err(e) => return unknown(name, recommended, e),
        Ok(None) => {
            return finding(
                Severity::Ok,
                name,
                "absent",
                "nothing to set",
                "this kernel has no haltpoll cpuidle governor (not a KVM guest)",
            )
        }
        Ok(Some(ns)) => *ns,
    };
    match facts.cpuidle_governor.as_deref() {
        Ok("haltpoll") => {}
        Ok(other) => {
            return finding(
                Severity::Info,
                name,
                polls.to_string(),
                recommended,
                format!("the cpuidle governor is {other}, not haltpoll: the setting has no effect"),
            )
        }
        Err(e) => return unknown(name, recommended, e),
    }
    if polls == 0 {
        finding(
            Severity::Warn,
            name,
            "0",
            recommended,
            "an idle vCPU halts at once, and a request or timer that wakes it waits for the \
             host to run it again: milliseconds on a busy host, on every request that finds a \
             shard or a client idle (tuning/README.md, guest halt polling)",
        )
    } else {
        finding(
            Severity::Ok,
            name,
            polls.to_string(),
            recommended,
            "an idle vCPU polls before it halts, so a request arriving soon after is served \
             without waiting for the host",
        )
    }
}

pub(super) fn check_cpus(facts: &Facts, cfg: &Config, shards: &Fact<usize>) -> Vec<Finding> {
    let mut out = Vec::new();
    let name = "shards vs CPUs";
    let shards = match shards {
        Err(e) => return vec![unknown(name, "one shard per CPU", e)],
        Ok(s) => *s,
    };
    let cpus: Fact<Vec<usize>> = if cfg.broker.cpus.is_empty() {
        facts.cpus_allowed.clone()
    } else {
        Ok(cfg.broker.cpus.clone())
    };
    match &cpus {
        Err(e) => out.push(unknown(name, "one shard per CPU", e)),
        Ok(cpus) => {
            let current = format!("{shards} shards, {} CPUs usable", cpus.len());
            let pin = cfg.broker.pin;
            out.push(if shards > cpus.len() && pin {
                finding(
                    Severity::Error,
                    name,
                    current,
                    "shards <= CPUs",
                    "broker.pin = true needs one CPU per shard: the broker refuses to start. \
                     Lower broker.shards or set pin = false",
                )
            } else if shards > cpus.len() {
                finding(
                    Severity::Warn,
                    name,
                    current,
                    "shards <= CPUs",
                    "more shards than CPUs: shards share cores and wait for each other",
                )
            } else {
                finding(
                    Severity::Ok,
                    name,
                    current,
                    "shards <= CPUs",
                    if pin {
                        "each shard gets a core of its own"
                    } else {
                        "enough CPUs; set broker.pin = true to keep each shard on its core"
                    },
                )
            });
            if let (Ok(online), false) = (&facts.cpus_online, cfg.broker.cpus.is_empty()) {
                let offline: Vec<_> = cpus.iter().filter(|c| !online.contains(c)).collect();
                if !offline.is_empty() {
                    out.push(finding(
                        Severity::Error,
                        "broker.cpus",
                        format!("{:?}", cfg.broker.cpus),
                        "online CPUs",
                        format!("CPUs {offline:?} are not online: their shards cannot be pinned"),
                    ));
                }
            }
            if let Ok(nodes) = &facts.numa_nodes {
                out.push(check_numa(nodes, &cpus[..shards.min(cpus.len())]));
            }
        }
    }
    out
}

fn check_numa(nodes: &[crate::tune::facts::NumaNode], shard_cpus: &[usize]) -> Finding {
    let name = "NUMA nodes";
    if nodes.len() <= 1 {
        return finding(Severity::Ok, name, "1", "-", "one memory node: all memory is local");
    }
    let spread: Vec<String> = nodes
        .iter()
        .map(|n| {
            let count = shard_cpus.iter().filter(|c| n.cpus.contains(c)).count();
            format!("node{}: {count} shards", n.id)
        })
        .collect();
    finding(
        Severity::Info,
        name,
        format!("{} ({})", nodes.len(), spread.join(", ")),
        "shards near the NIC and disk",
        "shards share nothing, so each one's memory stays on its node, but a shard on another \
         node than the NVMe and NIC pays a cross-node hop per I/O; list broker.cpus of one node, \
         or run one broker per node",
    )
}
