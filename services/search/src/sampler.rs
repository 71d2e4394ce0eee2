//! Samplers: which configuration trial `i` of a search tries.
//!
//! Both samplers are functions of the trial's index (and the search's seed): trial `i` gets the
//! same configuration however often it is asked for, in whatever order, by whichever replica.
//! A coordinator that crashes and is replaced therefore re-derives the configurations of the
//! trials it had started instead of drawing new ones, and two coordinators cannot hand out
//! different parameters for the same trial.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::error::SearchError;
use crate::space::{Configuration, Domain, Space};

/// How configurations are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// Independent draws, seeded per trial.
    Random {
        /// The search's seed.
        seed: u64,
    },
    /// Every combination of the domains' values, in a fixed order (the last setting by name
    /// varies fastest).
    Grid,
}

impl Sampler {
    /// Checks that the sampler can serve `space` for `trials` trials: a grid needs discrete
    /// domains and at most `trials` points (more would leave part of it untried).
    pub fn validate(&self, space: &Space, trials: u64) -> Result<(), SearchError> {
        space.validate()?;
        if *self == Self::Grid {
            let size = grid_size(space)?;
            if size > trials {
                return Err(SearchError::Grid(format!(
                    "the grid has {size} points, more than the {trials} trials allowed"
                )));
            }
        }
        Ok(())
    }

    /// The number of distinct configurations it yields (`None`: unbounded).
    pub fn size(&self, space: &Space) -> Option<u64> {
        match self {
            Self::Random { .. } => None,
            Self::Grid => grid_size(space).ok(),
        }
    }

    /// The configuration of trial `index` (from 0); `None` when a grid has no such point.
    pub fn configuration(&self, space: &Space, index: u64) -> Option<Configuration> {
        match self {
            Self::Random { seed } => Some(random(space, *seed, index)),
            Self::Grid => grid(space, index),
        }
    }
}

/// A seed for trial `index` of a search seeded `seed` (splitmix64 of both), so that neighbour
/// trials do not get correlated streams.
fn trial_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random(space: &Space, seed: u64, index: u64) -> Configuration {
    let mut rng = ChaCha8Rng::seed_from_u64(trial_seed(seed, index));
    space
        .0
        .iter()
        .map(|(name, domain)| {
            let value = match domain {
                Domain::Choice(values) => values[rng.random_range(0..values.len())].clone(),
                Domain::Uniform { low, high } => {
                    Value::from(low + (high - low) * rng.random::<f64>())
                }
                Domain::LogUniform { low, high } => {
                    let (a, b) = (low.ln(), high.ln());
                    Value::from((a + (b - a) * rng.random::<f64>()).exp().clamp(*low, *high))
                }
                Domain::Int { low, high } => Value::from(rng.random_range(*low..=*high)),
            };
            (name.clone(), value)
        })
        .collect()
}

fn grid_size(space: &Space) -> Result<u64, SearchError> {
    let mut size: u64 = 1;
    for (name, domain) in &space.0 {
        let n = domain.grid_size().ok_or_else(|| {
            SearchError::Grid(format!(
                "`{name}` is a continuous range; a grid needs a choice list or an integer range"
            ))
        })?;
        size = size
            .checked_mul(n)
            .ok_or_else(|| SearchError::Grid("the grid has more than 2^64 points".into()))?;
    }
    Ok(size)
}

fn grid(space: &Space, index: u64) -> Option<Configuration> {
    if index >= grid_size(space).ok()? {
        return None;
    }
    let mut rest = index;
    let mut config = Configuration::new();
    for (name, domain) in space.0.iter().rev() {
        let n = domain.grid_size()?;
        config.insert(name.clone(), domain.grid_value(rest % n)?);
        rest /= n;
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn space() -> Space {
        serde_json::from_value(json!({
            "learning_rate": {"log_uniform": {"low": 1e-4, "high": 1e-1}},
            "dropout": {"uniform": {"low": 0.1, "high": 0.5}},
            "embedding_dim": {"int": {"low": 16, "high": 20}},
            "model": {"choice": ["bow", "cnn", "bigru"]},
        }))
        .unwrap()
    }

    #[test]
    fn a_trial_gets_the_same_configuration_whenever_it_is_asked() {
        let s = space();
        let sampler = Sampler::Random { seed: 3 };
        let forward: Vec<_> = (0..20).map(|i| sampler.configuration(&s, i)).collect();
        let backward: Vec<_> = (0..20)
            .rev()
            .map(|i| sampler.configuration(&s, i))
            .collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        // Other seeds, other draws; neighbouring trials differ.
        let other = Sampler::Random { seed: 4 }.configuration(&s, 0);
        assert_ne!(other, forward[0]);
        assert_ne!(forward[0], forward[1]);
    }

    #[test]
    fn random_draws_stay_in_their_domains_and_cover_them() {
        let s = space();
        let sampler = Sampler::Random { seed: 11 };
        let mut models = std::collections::BTreeSet::new();
        let mut dims = std::collections::BTreeSet::new();
        let (mut low_lr, mut high_lr) = (0, 0);
        for i in 0..400 {
            let c = sampler.configuration(&s, i).unwrap();
            let lr = c["learning_rate"].as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&lr), "{lr}");
            // Log-uniform: as many draws in [1e-4, 1e-3) as in [1e-2, 1e-1].
            if lr < 1e-3 {
                low_lr += 1;
            }
            if lr >= 1e-2 {
                high_lr += 1;
            }
            let dropout = c["dropout"].as_f64().unwrap();
            assert!((0.1..=0.5).contains(&dropout));
            dims.insert(c["embedding_dim"].as_i64().unwrap());
            models.insert(c["model"].as_str().unwrap().to_string());
        }
        assert_eq!(dims, (16..=20).collect());
        assert_eq!(models.len(), 3);
        // Each third of the log range holds about 133 of 400 draws.
        assert!((100..170).contains(&low_lr), "{low_lr}");
        assert!((100..170).contains(&high_lr), "{high_lr}");
    }

    #[test]
    fn a_grid_visits_every_point_once_then_ends() {
        let s: Space = serde_json::from_value(json!({
            "batch_size": {"choice": [16, 32]},
            "hidden": {"int": {"low": 0, "high": 2}},
        }))
        .unwrap();
        let g = Sampler::Grid;
        assert_eq!(g.size(&s), Some(6));
        let points: Vec<Configuration> = (0..6).map(|i| g.configuration(&s, i).unwrap()).collect();
        let distinct: std::collections::BTreeSet<String> =
            points.iter().map(|p| json!(p).to_string()).collect();
        assert_eq!(distinct.len(), 6);
        // The last setting by name varies fastest.
        assert_eq!(
            points[0],
            serde_json::from_value(json!({"batch_size": 16, "hidden": 0})).unwrap()
        );
        assert_eq!(
            points[1],
            serde_json::from_value(json!({"batch_size": 16, "hidden": 1})).unwrap()
        );
        assert_eq!(
            points[3],
            serde_json::from_value(json!({"batch_size": 32, "hidden": 0})).unwrap()
        );
        assert_eq!(g.configuration(&s, 6), None);
        g.validate(&s, 6).unwrap();
        assert!(matches!(g.validate(&s, 5), Err(SearchError::Grid(_))));
    }

    #[test]
    fn a_grid_over_a_continuous_range_is_refused() {
        let err = Sampler::Grid.validate(&space(), 1000).unwrap_err();
        assert!(err.to_string().contains("dropout"), "{err}");
        Sampler::Random { seed: 0 }.validate(&space(), 1).unwrap();
    }
}
