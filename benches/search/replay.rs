//! `--replay FILE`: which ASHA settings would have reached random search's best, and how fast,
//! on the learning curves of a finished run (`--out` of `--arms random`, every trial trained to
//! the end), without training anything again.
//!
//! For each seed, the trials of the random arm are started in their order on `--concurrent`
//! slots; each epoch of a trial takes as long as it took in the run (its first, whose start was
//! not recorded, as long as its second, plus the run's wall-clock beyond its epochs shared out
//! over the trials: starting a trial costs time too); at every epoch end the real scheduler
//! ([`lexmesh_search::Asha`], the code the coordinator runs) takes the epoch's macro-F1 and
//! may stop the trial, whose slot then takes the next trial. The same simulation with no
//! scheduler gives random search's wall-clock. Per setting (grace period, reduction factor,
//! judge) it prints in how many seeds ASHA's best-so-far reached random's final best within
//! 0.5x random's simulated wall-clock, the median and worst ratio, and the trial-epochs used.
//!
//! Settings are meant to be chosen on seeds other than those a benchmark reports.

use std::collections::BTreeMap;
use std::path::Path;

use lexmesh_search::{Asha, AshaConfig, Decision, Judge};
use serde_json::Value;

use super::stats::median;

/// One trial's epochs: (duration s, macro-F1), in order.
type Curve = Vec<(f64, f64)>;

/// The trials of one seed's random arm, in trial order.
fn curves(arm: &Value) -> Vec<(String, Curve)> {
    let Some(trials) = arm["trials"].as_object() else {
        return Vec::new();
    };
    let mut out: Vec<(u64, String, Curve)> = trials
        .iter()
        .map(|(id, epochs)| {
            let mut rows: Vec<(f64, u64, f64)> = epochs
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| Some((e[0].as_f64()?, e[1].as_u64()?, e[2].as_f64()?)))
                .collect();
            rows.sort_by_key(|r| r.1);
            rows.dedup_by_key(|r| r.1);
            let mut curve: Curve = rows
                .windows(2)
                .map(|w| ((w[1].0 - w[0].0).max(0.0), w[1].2))
                .collect();
            if let Some(first) = rows.first() {
                let second = curve.first().map_or(1.0, |c| c.0);
                curve.insert(0, (second, first.2));
            }
            let index = id
                .rsplit_once("-t")
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(u64::MAX);
            (index, id.clone(), curve)
        })
        .collect();
    out.sort_by_key(|t| t.0);
    out.into_iter().map(|(_, id, c)| (id, c)).collect()
}

/// What one simulated search did.
struct Simulated {
    /// (time, best-so-far) at each improvement.
    best: Vec<(f64, f64)>,
    wall: f64,
    trial_epochs: usize,
}

impl Simulated {
    fn reached(&self, target: f64) -> Option<f64> {
        super::reached(&self.best, target)
    }
}

/// Runs the trials on `slots` slots, with `asha` deciding at each epoch end (None: every trial
/// runs all its epochs).
fn simulate(trials: &[(String, Curve)], slots: usize, mut asha: Option<Asha>) -> Simulated {
    // (time its next epoch ends, trial index, epochs done) per running trial.
    let mut running: Vec<(f64, usize, usize)> = Vec::new();
    let mut next = 0;
    let mut now = 0.0_f64;
    let mut best = f64::NEG_INFINITY;
    let mut out = Simulated {
        best: Vec::new(),
        wall: 0.0,
        trial_epochs: 0,
    };
    let start = |running: &mut Vec<(f64, usize, usize)>, next: &mut usize, now: f64| {
        while running.len() < slots && *next < trials.len() {
            if let Some((d, _)) = trials[*next].1.first() {
                running.push((now + d, *next, 0));
            }
            *next += 1;
        }
    };
    start(&mut running, &mut next, now);
    while let Some(i) = (0..running.len()).min_by(|a, b| running[*a].0.total_cmp(&running[*b].0)) {
        let (at, trial, done) = running[i];
        now = at;
        let (id, curve) = &trials[trial];
        let epoch = done + 1;
        let f1 = curve[done].1;
        out.trial_epochs += 1;
        if f1 > best {
            best = f1;
            out.best.push((now, f1));
        }
        let stop = epoch >= curve.len()
            || asha
                .as_mut()
                .is_some_and(|a| a.on_result(id, 0, epoch as u32, f1) == Decision::Stop);
        if stop {
            running.swap_remove(i);
            start(&mut running, &mut next, now);
        } else {
            running[i] = (now + curve[epoch].0, trial, epoch);
        }
    }
    out.wall = now;
    out
}

/// Replays the grid of settings over `file`'s random arms.
pub fn run(file: &Path, o: &super::Options) {
    let report: Value = serde_json::from_slice(
        &std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display())),
    )
    .expect("the file is a search benchmark's --out");
    let slots = o.concurrent.max(1) as usize;
    // Each trial's start (dataset, model, the trainer taking the job) is not in its epochs:
    // what the run's wall-clock on `slots` slots had beyond the epochs, spread over the trials,
    // is added to every trial's first epoch.
    let seeds: Vec<(u64, Vec<(String, Curve)>)> = report["seeds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let mut trials = curves(&s["random"]);
            let epochs: f64 = trials.iter().flat_map(|(_, c)| c.iter().map(|e| e.0)).sum();
            let wall = s["random"]["wall_s"].as_f64()?;
            let overhead = ((wall * slots as f64 - epochs) / trials.len().max(1) as f64).max(0.0);
            for (_, curve) in &mut trials {
                if let Some(first) = curve.first_mut() {
                    first.0 += overhead;
                }
            }
            println!("seed {}: {overhead:.1} s to start each trial", s["seed"]);
            Some((s["seed"].as_u64()?, trials))
        })
        .filter(|(_, c)| !c.is_empty())
        .collect();
    assert!(!seeds.is_empty(), "{} has no random arm", file.display());
    let max_t = seeds
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(_, curve)| curve.len()))
        .max()
        .unwrap_or(1) as u32;
    println!(
        "replay of {} ({} seeds: {:?}), {slots} at once, max_t {max_t}",
        file.display(),
        seeds.len(),
        seeds.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    println!(
        "| grace | rf | judge | seeds ≤ 0.5x | median ratio | worst ratio | trial-epochs (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let randoms: BTreeMap<u64, (f64, f64, usize)> = seeds
        .iter()
        .map(|(seed, trials)| {
            let r = simulate(trials, slots, None);
            let target = r.best.last().map_or(f64::NAN, |b| b.1);
            (*seed, (target, r.wall, r.trial_epochs))
        })
        .collect();
    println!(
        "| random | | | | 1.00 | 1.00 | {} |",
        median(randoms.values().map(|r| r.2 as f64)),
    );
    for grace in [1, 2, 3, 5, 9] {
        for rf in [2.0, 3.0, 4.0] {
            for judge in [Judge::Last, Judge::BestSoFar] {
                if grace > max_t {
                    continue;
                }
                let mut ratios = Vec::new();
                let mut epochs = Vec::new();
                for (seed, trials) in &seeds {
                    let asha = Asha::new(AshaConfig {
                        max_t,
                        grace_period: grace,
                        reduction_factor: rf,
                        brackets: 1,
                        judge,
                    })
                    .expect("valid ASHA settings");
                    let sim = simulate(trials, slots, Some(asha));
                    let (target, wall, _) = randoms[seed];
                    ratios.push(sim.reached(target).map_or(f64::INFINITY, |t| t / wall));
                    epochs.push(sim.trial_epochs as f64);
                }
                let within = ratios.iter().filter(|r| **r <= 0.5).count();
                let worst = ratios.iter().copied().fold(0.0, f64::max);
                println!(
                    "| {grace} | {rf} | {} | {within}/{} | {:.2} | {} | {} |",
                    match judge {
                        Judge::Last => "last",
                        Judge::BestSoFar => "best_so_far",
                    },
                    seeds.len(),
                    median(ratios.clone()),
                    if worst.is_finite() {
                        format!("{worst:.2}")
                    } else {
                        "never".into()
                    },
                    median(epochs),
                );
            }
        }
    }
}
