//! `ringmq tune apply`: turn a profile's OS settings into a plan of file writes under /proc/sys
//! and /sys, then carry it out (or, with `--dry-run`, only print it).
//!
//! [`plan`] is pure: facts and the profile's [`OsSettings`] in, [`Step`]s out (write, already
//! set, or cannot: unknown current value, a value the kernel does not offer). [`execute`]
//! writes each planned value to files that already exist (it never creates one), reads it
//! back, and reports each step; a step that fails is reported and the others still run.
//! Sysctl and sysfs writes last until reboot: tuning/README.md says how to make them permanent.
//! Resource limits cannot be changed for processes not yet started; the systemd unit
//! ([`super::unit`]) carries them.

use std::io::Write;
use std::path::PathBuf;

use super::facts::{self, parse_selection, read_text, Fact, Facts, Root, Selection};
use super::profiles::OsSettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Write,
    Unchanged,
    Cannot(String),
}

/// One setting to change: where, from what, to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub setting: String,
    pub paths: Vec<PathBuf>,
    pub from: String,
    pub to: String,
    pub action: Action,
}

fn plain_step(setting: &str, path: PathBuf, current: &Fact<u64>, want: u64) -> Step {
    let (from, action) = match current {
        Ok(c) if *c == want => (c.to_string(), Action::Unchanged),
        Ok(c) => (c.to_string(), Action::Write),
        Err(e) => ("unknown".into(), Action::Cannot(e.clone())),
    };
    Step { setting: setting.into(), paths: vec![path], from, to: want.to_string(), action }
}

fn selection_step(setting: String, path: PathBuf, current: &Fact<Selection>, want: &str) -> Step {
    let (from, action) = match current {
        Ok(s) if s.current == want => (s.current.clone(), Action::Unchanged),
        Ok(s) if !s.available.iter().any(|a| a == want) => (
            s.current.clone(),
            Action::Cannot(format!("this kernel offers only {}", s.available.join(", "))),
        ),
        Ok(s) => (s.current.clone(), Action::Write),
        Err(e) => ("unknown".into(), Action::Cannot(e.clone())),
    };
    Step { setting, paths: vec![path], from, to: want.into(), action }
}

/// The writes that bring this machine to `os`.
pub fn plan(root: &Root, facts: &Facts, os: &OsSettings) -> Vec<Step> {
    let mut steps = Vec::new();
    for (setting, path, current, want) in [
        ("vm.swappiness", facts::SYSCTL_SWAPPINESS, &facts.swappiness, os.swappiness),
        (
            "vm.dirty_background_ratio",
            facts::SYSCTL_DIRTY_BACKGROUND_RATIO,
            &facts.dirty_background_ratio,
            os.dirty_background_ratio,
        ),
        ("vm.dirty_ratio", facts::SYSCTL_DIRTY_RATIO, &facts.dirty_ratio, os.dirty_ratio),
        (
            "vm.dirty_expire_centisecs",
            facts::SYSCTL_DIRTY_EXPIRE,
            &facts.dirty_expire_centisecs,
            os.dirty_expire_centisecs,
        ),
        (
            "vm.dirty_writeback_centisecs",
            facts::SYSCTL_DIRTY_WRITEBACK,
            &facts.dirty_writeback_centisecs,
            os.dirty_writeback_centisecs,
        ),
    ] {
        if let Some(want) = want {
            steps.push(plain_step(setting, root.path(path), current, want));
        }
    }
    for (setting, path, current, want) in [
        (
            "transparent_hugepage/enabled",
            facts::THP_ENABLED,
            &facts.thp_enabled,
            &os.transparent_hugepage,
        ),
        (
            "transparent_hugepage/defrag",
            facts::THP_DEFRAG,
            &facts.thp_defrag,
            &os.transparent_hugepage_defrag,
        ),
    ] {
        if let Some(want) = want {
            steps.push(selection_step(setting.into(), root.path(path), current, want));
        }
    }
    if os.io_scheduler_flash.is_some() || os.io_scheduler_rotational.is_some() {
        match &facts.data.devices {
            Err(e) => steps.push(Step {
                setting: "data disk queue/scheduler".into(),
                paths: Vec::new(),
                from: "unknown".into(),
                to: [&os.io_scheduler_flash, &os.io_scheduler_rotational]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .collect::<Vec<_>>()
                    .join(" or "),
                action: Action::Cannot(e.clone()),
            }),
            Ok(devices) => {
                for d in devices {
                    let want = match d.rotational {
                        Ok(true) => &os.io_scheduler_rotational,
                        _ => &os.io_scheduler_flash,
                    };
                    if let Some(want) = want {
                        let setting = format!("{} queue/scheduler", d.name);
                        steps.push(selection_step(setting, d.scheduler_path(), &d.scheduler, want));
                    }
                }
            }
        }
    }
    if let Some(want) = &os.cpu_governor {
        steps.push(governor_step(root, facts, want));
    }
    if let Some(want) = os.guest_halt_poll_ns {
        let setting = "haltpoll guest_halt_poll_ns";
        let path = root.path(facts::GUEST_HALT_POLL_NS);
        steps.push(match facts.guest_halt_poll_ns.clone().transpose() {
            Some(current) => plain_step(setting, path, &current, want),
            None => Step {
                setting: setting.into(),
                paths: Vec::new(),
                from: "absent".into(),
                to: want.to_string(),
                action: Action::Cannot(
                    "this kernel has no haltpoll cpuidle governor (KVM guests only): nothing to \
                     set"
                    .into(),
                ),
            },
        });
    }
    steps
}

fn governor_step(root: &Root, facts: &Facts, want: &str) -> Step {
    let setting = "cpu*/cpufreq/scaling_governor".to_string();
    let governors = match &facts.governors {
        Err(e) => {
            let action = Action::Cannot(e.clone());
            return Step {
                setting,
                paths: Vec::new(),
                from: "unknown".into(),
                to: want.into(),
                action,
            };
        }
        Ok(g) => g,
    };
    let from = governors.keys().cloned().collect::<Vec<_>>().join(", ");
    let paths: Vec<PathBuf> =
        governors.values().flatten().map(|&cpu| root.path(&facts::governor_path(cpu))).collect();
    let action = if governors.keys().all(|g| g == want) {
        Action::Unchanged
    } else {
        match &facts.governors_available {
            Ok(available) if !available.iter().any(|g| g == want) => {
                Action::Cannot(format!("the CPUs offer only {}", available.join(", ")))
            }
            // Unknown availability: try; the kernel refuses a governor it lacks.
            _ => Action::Write,
        }
    };
    Step { setting, paths, from, to: want.into(), action }
}

/// What happened to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub step: Step,
    /// Err: why the write failed or could not be done.
    pub result: Result<(), String>,
}

impl Outcome {
    /// One line for the user, e.g. "set vm.swappiness: 60 -> 1".
    pub fn describe(&self, dry_run: bool) -> String {
        let s = &self.step;
        match (&s.action, &self.result) {
            (Action::Unchanged, _) => format!("unchanged {}: already {}", s.setting, s.to),
            (Action::Cannot(why), _) => format!("cannot set {} to {}: {why}", s.setting, s.to),
            (Action::Write, Err(e)) => {
                format!("FAILED {}: {} -> {}: {e}", s.setting, s.from, s.to)
            }
            (Action::Write, Ok(())) => {
                let verb = if dry_run { "would set" } else { "set" };
                let place = match s.paths.as_slice() {
                    [one] => one.display().to_string(),
                    many => format!("{} files", many.len()),
                };
                format!("{verb} {}: {} -> {} ({place})", s.setting, s.from, s.to)
            }
        }
    }
}

/// Carries out `steps` (writes nothing when `dry_run`).
pub fn execute(steps: Vec<Step>, dry_run: bool) -> Vec<Outcome> {
    steps
        .into_iter()
        .map(|step| {
            let result = if step.action == Action::Write && !dry_run {
                step.paths.iter().try_for_each(|p| write_setting(p, &step.to))
            } else {
                Ok(())
            };
            Outcome { step, result }
        })
        .collect()
}

/// Writes `value` to an existing /proc or /sys file and checks that it reads back.
fn write_setting(path: &std::path::Path, value: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    drop(file);
    let text = read_text(path)?;
    let now = if text.contains('[') { parse_selection(&text)?.current } else { text };
    if now != value {
        return Err(format!("{} reads back {now:?} after writing {value:?}", path.display()));
    }
    Ok(())
}
