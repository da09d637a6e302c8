//! Token sampling: greedy, temperature, top-k, top-p, seeded; and answer confidence.

/// Sampling settings. `temp <= 0` means greedy (argmax).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    pub temp: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.0,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
        }
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A sampler with its random state and a candidate buffer sized to the vocabulary (allocated
/// once; sampling allocates nothing).
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    rng: Rng,
    /// `(token, logit)` then `(token, probability)` after [`Sampler::candidates`].
    cand: Vec<(u32, f32)>,
}

/// Index of the largest logit (the first one on ties, like numpy's argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Probability of `token` under the softmax of `logits` at temperature 1 (ggml's vectorised
/// `expf`, within 2 ulp of libm's, summed in f64: it runs once per generated token over the
/// whole vocabulary, where libm's f64 `exp` took ~2% of a decoded token).
pub fn token_prob(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum = slmpack_kernels::vec::exp_sum_of(logits, max);
    (slmpack_kernels::vec::expf(logits[token as usize] - max) as f64 / sum) as f32
}

impl Sampler {
    pub fn new(cfg: SamplerConfig, n_vocab: usize) -> Sampler {
        Sampler {
            cfg,
            rng: Rng::new(cfg.seed),
            cand: Vec::with_capacity(n_vocab),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// The tokens that survive top-k and top-p, most likely first, with their probabilities
    /// (at the configured temperature, renormalized over the survivors).
    pub fn candidates(&mut self, logits: &[f32]) -> &[(u32, f32)] {
        let cfg = self.cfg;
        let temp = if cfg.temp > 0.0 { cfg.temp } else { 1.0 };
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if cfg.top_k > 0 && cfg.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(cfg.top_k - 1, desc);
            self.cand.truncate(cfg.top_k);
        }
        self.cand.sort_unstable_by(desc);
        let max = self.cand[0].1;
        let mut sum = 0f64;
        for c in self.cand.iter_mut() {
            let e = (((c.1 - max) / temp) as f64).exp();
            c.1 = e as f32;
            sum += e;
        }
        for c in self.cand.iter_mut() {
            c.1 = (c.1 as f64 / sum) as f32;
        }
        if cfg.top_p < 1.0 {
            let mut cum = 0f64;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += c.1 as f64;
                if cum >= cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
            let s: f64 = self.cand.iter().map(|c| c.1 as f64).sum();
            for c in self.cand.iter_mut() {
                c.1 = (c.1 as f64 / s) as f32;
            }
        }
        &self.cand
    }

    /// Pick the next token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temp <= 0.0 {
            return argmax(logits);
        }
        let r = self.rng.next_f64();
        let cand = self.candidates(logits);
        let mut cum = 0f64;
        for &(id, p) in cand {
            cum += p as f64;
            if r < cum {
                return id;
            }
        }
        cand[cand.len() - 1].0
    }
}

/// Confidence of an answer: the mean and the minimum, over the chosen tokens, of each token's
/// probability under the model's softmax at temperature 1 (whatever temperature sampled it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Confidence {
    sum: f64,
    min: f32,
    n: usize,
}

impl Confidence {
    pub fn push(&mut self, p: f32) {
        self.min = if self.n == 0 { p } else { self.min.min(p) };
        self.sum += p as f64;
        self.n += 1;
    }
    /// Mean token probability (1 for an empty answer: nothing was uncertain).
    pub fn mean(&self) -> f32 {
        if self.n == 0 {
            1.0
        } else {
            (self.sum / self.n as f64) as f32
        }
    }
    /// Minimum token probability (1 for an empty answer).
    pub fn min(&self) -> f32 {
        if self.n == 0 {
            1.0
        } else {
            self.min
        }
    }
    pub fn n_tokens(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 0.0, 3.0, -1.0, 2.5, 0.5]
    }

    #[test]
    fn greedy_is_argmax_first_on_ties() {
        let mut s = Sampler::new(SamplerConfig::default(), 8);
        assert_eq!(s.sample(&logits()), 1);
        assert_eq!(argmax(&[0.0, -1.0]), 0);
    }

    #[test]
    fn seeded_sampling_is_deterministic_and_seed_dependent() {
        let cfg = SamplerConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1234,
        };
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg }, 8);
            (0..64).map(|_| s.sample(&logits())).collect::<Vec<_>>()
        };
        assert_eq!(run(1234), run(1234));
        assert_ne!(run(1234), run(99));
        // every token has non-zero probability, so 64 draws at temp 1 visit several
        let distinct: std::collections::BTreeSet<_> = run(1234).into_iter().collect();
        assert!(distinct.len() >= 4, "{distinct:?}");
    }

    #[test]
    fn sample_frequencies_follow_probabilities() {
        let cfg = SamplerConfig {
            temp: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
        };
        let l = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut s = Sampler::new(cfg, 2);
        let n = 20000;
        let ones = (0..n).filter(|_| s.sample(&l) == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.02, "{f}");
    }

    #[test]
    fn top_k_keeps_k_most_likely() {
        let mut s = Sampler::new(
            SamplerConfig {
                temp: 1.0,
                top_k: 3,
                top_p: 1.0,
                seed: 0,
            },
            8,
        );
        let ids: Vec<u32> = s.candidates(&logits()).iter().map(|c| c.0).collect();
        assert_eq!(ids, vec![1, 4, 6]);
        let p: f32 = s.candidates(&logits()).iter().map(|c| c.1).sum();
        assert!((p - 1.0).abs() < 1e-6);
        for _ in 0..200 {
            assert!([1, 4, 6].contains(&s.sample(&logits())));
        }
    }

    #[test]
    fn top_p_keeps_smallest_set_reaching_p() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        let l: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mk = |top_p| {
            let mut s = Sampler::new(
                SamplerConfig {
                    temp: 1.0,
                    top_k: 0,
                    top_p,
                    seed: 0,
                },
                4,
            );
            s.candidates(&l).iter().map(|c| c.0).collect::<Vec<_>>()
        };
        assert_eq!(mk(0.5), vec![0]);
        assert_eq!(mk(0.79), vec![0, 1]);
        assert_eq!(mk(0.81), vec![0, 1, 2]);
        assert_eq!(mk(1.0), vec![0, 1, 2, 3]);
        assert_eq!(mk(0.0), vec![0]);
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let l = [0.0f32, 1.0];
        let p_at = |temp| {
            let mut s = Sampler::new(
                SamplerConfig {
                    temp,
                    top_k: 0,
                    top_p: 1.0,
                    seed: 0,
                },
                2,
            );
            s.candidates(&l)[0].1
        };
        let p1 = 1.0 / (1.0 + (-1.0f32).exp());
        assert!((p_at(1.0) - p1).abs() < 1e-6);
        assert!(p_at(0.5) > p1 && p_at(2.0) < p1);
    }

    #[test]
    fn confidence_math() {
        let l = [0.0f32, (3.0f32).ln()];
        assert!((token_prob(&l, 1) - 0.75).abs() < 1e-6);
        assert!((token_prob(&l, 0) - 0.25).abs() < 1e-6);
        // large logits do not overflow
        assert!((token_prob(&[1000.0, 1000.0], 0) - 0.5).abs() < 1e-6);
        let mut c = Confidence::default();
        assert_eq!((c.mean(), c.min()), (1.0, 1.0));
        for p in [0.9, 0.5, 0.7] {
            c.push(p);
        }
        assert!((c.mean() - 0.7).abs() < 1e-6);
        assert_eq!(c.min(), 0.5);
        assert_eq!(c.n_tokens(), 3);
    }
}
