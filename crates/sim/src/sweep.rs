//! The adaptive policy's knobs swept: each setting run over several seeds,
//! giving the verification overhead it costs and the wrong results it lets
//! through, so a requestor can pick its point on the frontier.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use idlegrid_market::Trust;

use crate::{Report, SimConfig, Simulation};

/// The settings swept by default: how long trust takes (`after`) crossed
/// with how fast the spot-check odds fall (`halving`), at the default floor.
pub fn grid() -> Vec<Trust> {
    let floor_permille = Trust::default().floor_permille;
    let mut grid = Vec::new();
    for after in [0, 3, 10] {
        for halving in [2, 5, 10, 20, 40] {
            grid.push(Trust {
                after,
                halving,
                floor_permille,
            });
        }
    }
    grid
}

/// One setting's figures, over its seeds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SweepPoint {
    pub after: u32,
    pub halving: u32,
    pub floor_permille: u32,
    pub seeds: u32,
    /// Mean verification overhead, all jobs.
    pub overhead: f64,
    /// Mean overhead of the last job (the same as `overhead` with one job).
    pub last_job_overhead: f64,
    /// Mean wrong results standing accepted at the end of the run.
    pub wrong_accepted: f64,
    /// The most wrong results any one seed accepted.
    pub wrong_accepted_max: u64,
    /// Honest devices accused, summed over the seeds.
    pub honest_accused: u64,
    /// Runs that did not finish every job in the time limit.
    pub unfinished: u32,
    /// No other setting has both less overhead and fewer wrong results.
    pub frontier: bool,
}

impl SweepPoint {
    pub fn trust(&self) -> Trust {
        Trust {
            after: self.after,
            halving: self.halving,
            floor_permille: self.floor_permille,
        }
    }

    /// The setting as `after/halving/floor`.
    pub fn label(&self) -> String {
        format!("{}/{}/{}", self.after, self.halving, self.floor_permille)
    }
}

/// Runs every setting of `grid` on `seeds` seeds from `base.seed` on, on
/// `threads` threads; `done` is told of each run as it ends (runs done,
/// runs in all). Points come back in `grid`'s order, the frontier marked.
pub fn sweep(
    base: &SimConfig,
    grid: &[Trust],
    seeds: u32,
    threads: usize,
    done: &(dyn Fn(usize, usize) + Sync),
) -> Vec<SweepPoint> {
    let seeds = seeds.max(1);
    let runs: Vec<(usize, u64)> = (0..grid.len())
        .flat_map(|setting| (0..u64::from(seeds)).map(move |n| (setting, n)))
        .collect();
    let reports: Mutex<Vec<Option<Report>>> = Mutex::new(vec![None; runs.len()]);
    let next = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, runs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let run = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(setting, n)) = runs.get(run) else {
                        return;
                    };
                    let config = SimConfig {
                        seed: base.seed.wrapping_add(n),
                        trust: grid[setting],
                        ..base.clone()
                    };
                    let report = Simulation::new(config).run();
                    reports.lock().expect("no run panics holding it")[run] = Some(report);
                    done(finished.fetch_add(1, Ordering::Relaxed) + 1, runs.len());
                }
            });
        }
    });
    let reports = reports.into_inner().expect("no run panicked holding it");
    let mut points: Vec<SweepPoint> = grid
        .iter()
        .enumerate()
        .map(|(setting, trust)| {
            let mine: Vec<&Report> = runs
                .iter()
                .zip(&reports)
                .filter(|((of, _), _)| *of == setting)
                .filter_map(|(_, report)| report.as_ref())
                .collect();
            point(*trust, &mine)
        })
        .collect();
    mark_frontier(&mut points);
    points
}

fn point(trust: Trust, reports: &[&Report]) -> SweepPoint {
    let count = reports.len().max(1) as f64;
    let mean = |figure: fn(&Report) -> f64| reports.iter().map(|r| figure(r)).sum::<f64>() / count;
    SweepPoint {
        after: trust.after,
        halving: trust.halving,
        floor_permille: trust.floor_permille,
        seeds: reports.len() as u32,
        overhead: mean(|r| r.overhead),
        last_job_overhead: mean(|r| r.last_job_overhead),
        wrong_accepted: mean(|r| r.wrong_accepted as f64),
        wrong_accepted_max: reports.iter().map(|r| r.wrong_accepted).max().unwrap_or(0),
        honest_accused: reports.iter().map(|r| r.honest_accused).sum(),
        unfinished: reports.iter().filter(|r| !r.finished).count() as u32,
        frontier: false,
    }
}

/// Marks the points no other point beats on both overhead and wrong
/// results (ties on both are all kept).
pub fn mark_frontier(points: &mut [SweepPoint]) {
    let figures: Vec<(f64, f64)> = points
        .iter()
        .map(|point| (point.overhead, point.wrong_accepted))
        .collect();
    for (point, &(overhead, wrong)) in points.iter_mut().zip(&figures) {
        point.frontier = !figures.iter().any(|&(other_overhead, other_wrong)| {
            other_overhead <= overhead
                && other_wrong <= wrong
                && (other_overhead < overhead || other_wrong < wrong)
        });
    }
}

/// A point at `overhead` and `wrong_accepted`, for tests.
#[cfg(test)]
pub(crate) fn point_at(overhead: f64, wrong_accepted: f64, halving: u32) -> SweepPoint {
    SweepPoint {
        after: 3,
        halving,
        floor_permille: 20,
        seeds: 3,
        overhead,
        last_job_overhead: overhead,
        wrong_accepted,
        wrong_accepted_max: wrong_accepted as u64,
        honest_accused: 0,
        unfinished: 0,
        frontier: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(overhead: f64, wrong_accepted: f64) -> SweepPoint {
        point_at(overhead, wrong_accepted, 10)
    }

    #[test]
    fn the_frontier_is_the_points_nothing_beats_on_both_counts() {
        let mut points = vec![
            at(1.1, 50.0),
            at(1.3, 10.0),
            at(1.3, 20.0), // beaten by 1.3/10
            at(1.5, 60.0), // beaten by both ends
            at(2.0, 0.0),
            at(2.0, 0.0), // a tie is kept
        ];
        mark_frontier(&mut points);
        let frontier: Vec<bool> = points.iter().map(|point| point.frontier).collect();
        assert_eq!(frontier, [true, true, false, false, true, true]);
    }

    #[test]
    fn a_sweep_runs_every_setting_on_every_seed_and_never_accuses_the_honest() {
        let base = SimConfig {
            devices: 60,
            tasks: 400,
            session_mean_ms: 0,
            ..SimConfig::default()
        };
        let grid = [
            Trust {
                after: 0,
                halving: 1,
                floor_permille: 0,
            },
            Trust {
                after: 10,
                halving: 40,
                floor_permille: 100,
            },
        ];
        let calls = AtomicUsize::new(0);
        let points = sweep(&base, &grid, 2, 2, &|_, total| {
            assert_eq!(total, 4);
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.into_inner(), 4);
        assert_eq!(points.len(), 2);
        for (point, trust) in points.iter().zip(grid) {
            assert_eq!(point.trust(), trust);
            assert_eq!(point.seeds, 2);
            assert_eq!(point.unfinished, 0);
            assert_eq!(point.honest_accused, 0);
        }
        // Checking more costs more.
        assert!(points[1].overhead > points[0].overhead, "{points:?}");
    }
}
