//! The random draws the simulator is built from: seed mixing, weighted
//! choice, Poisson, exponential and normal samples.
//!
//! Portable: fixed-width integer ranges (never `usize`) and `libm`, so the
//! same seed gives the same draws on every platform. The number and order
//! of `rng` calls per sample is part of the output: changing it changes the
//! generated traffic.

use rand::rngs::StdRng;
use rand::Rng;

/// SplitMix64 finaliser over `a ^ b`: seeds from (seed, stream).
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An index drawn with the given relative weights.
pub(super) fn pick(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

/// Knuth's Poisson sampler (the rates here are small).
pub(super) fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let limit = libm::exp(-lambda);
    let mut p = 1.0;
    let mut k = 0;
    loop {
        p *= rng.gen::<f64>();
        if p <= limit || k >= 1_000 {
            return k;
        }
        k += 1;
    }
}

/// Exponential with the given mean, in millis.
pub(super) fn exponential(rng: &mut StdRng, mean_ms: f64) -> i64 {
    let u: f64 = rng.gen::<f64>();
    (-libm::log(1.0 - u) * mean_ms) as i64
}

/// Standard normal (Box–Muller).
pub(super) fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)
}
