//! Statistics with the conventions of the tools users compare against.
//!
//! * [`Summary`]: mean and **sample** standard deviation (divisor `n - 1`, 0 for one sample),
//!   like llama-bench's `stdev`.
//! * [`percentile`]: linear interpolation between closest ranks (numpy's default "linear",
//!   Hyndman–Fan type 7): for sorted `x[0..n]` and `p` in `[0, 100]`, `h = (n - 1) p / 100`,
//!   result `x[⌊h⌋] + (h - ⌊h⌋)(x[⌊h⌋+1] - x[⌊h⌋])`.
//! * [`rates`]: llama-bench's throughput averaging — each repetition becomes its own
//!   tokens/s sample (`n_tokens / seconds`), then mean ± sample sd of those samples (not total
//!   tokens over total time).
//! * [`Perplexity`]: llama-perplexity's estimate — `PPL = exp(mean NLL)` and the error bar
//!   `PPL · sqrt((mean(NLL²) − mean(NLL)²) / (count − 1))`.
//! * [`KldAccumulator`]: llama-perplexity `--kl-divergence`'s statistics.
//! * [`Accuracy`]: lm-eval-harness's `acc` with standard error `sqrt(p (1 − p) / (n − 1))`
//!   (the sample standard error of the mean of 0/1 outcomes).

use serde::{Deserialize, Serialize};

/// Mean, sample standard deviation and the extremes of a list of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (`n - 1` divisor); 0 when `n < 2`.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(xs: &[f64]) -> Summary {
        let n = xs.len();
        if n == 0 {
            return Summary {
                n,
                mean: 0.0,
                sd: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mean = mean(xs);
        Summary {
            n,
            mean,
            sd: sample_sd(xs),
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// Standard error of the mean (`sd / sqrt(n)`).
    pub fn sem(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            self.sd / (self.n as f64).sqrt()
        }
    }
}

pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Sample standard deviation, divisor `n - 1` (0 for fewer than two samples).
pub fn sample_sd(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (n - 1) as f64).sqrt()
}

/// Percentile `p` (0..=100) by linear interpolation between closest ranks (numpy "linear").
/// `None` for an empty slice. NaNs sort last.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(percentile_sorted(&v, p))
}

/// [`percentile`] on an already sorted, non-empty slice.
pub fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let p = p.clamp(0.0, 100.0);
    let h = (v.len() - 1) as f64 * p / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// p50 / p90 / p99 of a list of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(xs: &[f64]) -> Option<Percentiles> {
        let mut v = xs.to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(Percentiles {
            p50: percentile_sorted(&v, 50.0),
            p90: percentile_sorted(&v, 90.0),
            p99: percentile_sorted(&v, 99.0),
        })
    }
}

/// llama-bench's tokens/s: one sample per repetition, `n_tokens[i] / seconds[i]`.
pub fn rates(n_tokens: &[usize], seconds: &[f64]) -> Vec<f64> {
    n_tokens
        .iter()
        .zip(seconds)
        .map(|(&n, &s)| if s > 0.0 { n as f64 / s } else { 0.0 })
        .collect()
}

/// log-softmax of one row of logits, in f64 for the sums.
pub fn log_softmax(logits: &[f32], out: &mut Vec<f64>) {
    out.clear();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    out.extend(logits.iter().map(|&l| l as f64 - lse));
}

/// Index of the largest value (the first on ties).
pub fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Running negative log-likelihood sums, llama-perplexity style.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Perplexity {
    pub count: usize,
    pub nll: f64,
    pub nll2: f64,
}

/// A perplexity estimate with its error bar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PplEstimate {
    pub ppl: f64,
    /// One standard error of the estimate, as llama-perplexity prints after `+/-`.
    pub err: f64,
    pub tokens: usize,
}

impl Perplexity {
    /// Add the negative log-likelihood of one scored token.
    pub fn push(&mut self, nll: f64) {
        self.count += 1;
        self.nll += nll;
        self.nll2 += nll * nll;
    }

    pub fn estimate(&self) -> PplEstimate {
        if self.count == 0 {
            return PplEstimate {
                ppl: f64::NAN,
                err: f64::NAN,
                tokens: 0,
            };
        }
        let n = self.count as f64;
        let nll = self.nll / n;
        let var = self.nll2 / n - nll * nll;
        let ppl = nll.exp();
        let err = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        PplEstimate {
            ppl,
            err,
            tokens: self.count,
        }
    }
}

/// Per-token comparison of a model's distribution against a reference's.
#[derive(Debug, Clone, Default)]
pub struct KldAccumulator {
    pub kld: Vec<f64>,
    /// `p_new(actual) - p_ref(actual)` for the actual next token.
    pub dp: Vec<f64>,
    pub same_top: usize,
    /// `nll_new - nll_ref` per token (for ln(PPL ratio)).
    pub dnll: Vec<f64>,
    pub ref_ppl: Perplexity,
    pub new_ppl: Perplexity,
}

/// KL-divergence statistics, llama-perplexity `--kl-divergence` style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KldStats {
    pub tokens: usize,
    pub mean_kld: f64,
    /// Standard error of the mean KLD.
    pub mean_kld_err: f64,
    pub kld_p50: f64,
    pub kld_p90: f64,
    pub kld_p99: f64,
    pub kld_max: f64,
    /// RMS of `p_new(t) - p_ref(t)` for the actual next token `t`, in percent.
    pub rms_dp_pct: f64,
    /// Share of positions whose argmax token agrees with the reference's, in percent.
    pub same_top_pct: f64,
    /// Its standard error (binomial), in percent.
    pub same_top_err_pct: f64,
    pub ref_ppl: PplEstimate,
    pub ppl: PplEstimate,
    /// `PPL - PPL_ref`.
    pub delta_ppl: f64,
    /// Error bar of `delta_ppl` from the per-token NLL differences:
    /// `PPL_ref · exp(mean Δnll) · sem(Δnll)`.
    pub delta_ppl_err: f64,
}

impl KldAccumulator {
    /// Compare one position: `ref_lp` and `new_lp` are log-softmax rows, `actual` the next token.
    pub fn push(&mut self, ref_lp: &[f64], new_lp: &[f64], actual: usize) {
        let mut kld = 0.0;
        let mut ref_top = 0;
        let mut new_top = 0;
        for i in 0..ref_lp.len() {
            let p = ref_lp[i].exp();
            kld += p * (ref_lp[i] - new_lp[i]);
            if ref_lp[i] > ref_lp[ref_top] {
                ref_top = i;
            }
            if new_lp[i] > new_lp[new_top] {
                new_top = i;
            }
        }
        // Rounding can make an exact match a tiny negative number.
        self.kld.push(kld.max(0.0));
        self.dp.push(new_lp[actual].exp() - ref_lp[actual].exp());
        if ref_top == new_top {
            self.same_top += 1;
        }
        self.dnll.push(ref_lp[actual] - new_lp[actual]);
        self.ref_ppl.push(-ref_lp[actual]);
        self.new_ppl.push(-new_lp[actual]);
    }

    pub fn finish(&self) -> KldStats {
        let n = self.kld.len();
        let k = Summary::of(&self.kld);
        let mut sorted = self.kld.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let pct = |p| {
            if n == 0 {
                f64::NAN
            } else {
                percentile_sorted(&sorted, p)
            }
        };
        let rms_dp = if n == 0 {
            f64::NAN
        } else {
            (self.dp.iter().map(|d| d * d).sum::<f64>() / n as f64).sqrt()
        };
        let same = if n == 0 {
            f64::NAN
        } else {
            self.same_top as f64 / n as f64
        };
        let same_err = if n > 1 {
            (same * (1.0 - same) / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let ref_ppl = self.ref_ppl.estimate();
        let ppl = self.new_ppl.estimate();
        let d = Summary::of(&self.dnll);
        KldStats {
            tokens: n,
            mean_kld: k.mean,
            mean_kld_err: k.sem(),
            kld_p50: pct(50.0),
            kld_p90: pct(90.0),
            kld_p99: pct(99.0),
            kld_max: if n == 0 { f64::NAN } else { k.max },
            rms_dp_pct: rms_dp * 100.0,
            same_top_pct: same * 100.0,
            same_top_err_pct: same_err * 100.0,
            ref_ppl,
            ppl,
            delta_ppl: ppl.ppl - ref_ppl.ppl,
            delta_ppl_err: ref_ppl.ppl * d.mean.exp() * d.sem(),
        }
    }
}

/// A proportion with its standard error, lm-eval-harness style.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub n: usize,
    pub correct: usize,
    pub acc: f64,
    /// `sqrt(acc (1 - acc) / (n - 1))`, as lm-eval-harness's `mean_stderr` of 0/1 outcomes.
    pub stderr: f64,
}

impl Accuracy {
    pub fn new(correct: usize, n: usize) -> Accuracy {
        let acc = if n == 0 {
            f64::NAN
        } else {
            correct as f64 / n as f64
        };
        let stderr = if n > 1 {
            (acc * (1.0 - acc) / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Accuracy {
            n,
            correct,
            acc,
            stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_and_sample_sd_by_hand() {
        // mean 5; squared deviations 9,1,1,1,0,0,4,16 = 32; /7 -> sd = sqrt(32/7)
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let s = Summary::of(&xs);
        assert_eq!(s.mean, 5.0);
        assert!(close(s.sd, (32.0f64 / 7.0).sqrt(), 1e-12));
        assert_eq!((s.min, s.max, s.n), (2.0, 9.0, 8));
        assert!(close(s.sem(), (32.0f64 / 7.0).sqrt() / 8f64.sqrt(), 1e-12));
        assert_eq!(Summary::of(&[3.0]).sd, 0.0);
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn percentiles_interpolate_linearly() {
        let xs = [15.0, 20.0, 35.0, 40.0, 50.0];
        // h = 4 * 0.4 = 1.6 -> 20 + 0.6 * 15 = 29
        assert!(close(percentile(&xs, 40.0).unwrap(), 29.0, 1e-12));
        assert_eq!(percentile(&xs, 50.0), Some(35.0));
        assert_eq!(percentile(&xs, 0.0), Some(15.0));
        assert_eq!(percentile(&xs, 100.0), Some(50.0));
        // h = 4 * 0.9 = 3.6 -> 40 + 0.6 * 10 = 46 ; h = 3.96 -> 40 + 0.96 * 10 = 49.6
        let p = Percentiles::of(&[50.0, 40.0, 35.0, 20.0, 15.0]).unwrap();
        assert!(close(p.p90, 46.0, 1e-12));
        assert!(close(p.p99, 49.6, 1e-12));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn llama_bench_rate_averaging() {
        // 128 tokens in 1 s, 2 s and 4 s: samples 128, 64, 32 t/s, mean 74.67 (not 384/7 = 54.9)
        let r = rates(&[128, 128, 128], &[1.0, 2.0, 4.0]);
        assert_eq!(r, vec![128.0, 64.0, 32.0]);
        let s = Summary::of(&r);
        assert!(close(s.mean, 224.0 / 3.0, 1e-12));
        // deviations 53.33, -10.67, -42.67: squares 2844.44 + 113.78 + 1820.44 = 4778.67; /2
        assert!(close(s.sd, (4_778.666_666_666_667_f64 / 2.0).sqrt(), 1e-9));
    }

    #[test]
    fn perplexity_matches_hand_computation() {
        let mut p = Perplexity::default();
        for nll in [1.0, 2.0, 3.0] {
            p.push(nll);
        }
        let e = p.estimate();
        // mean 2, mean sq 14/3, var 2/3, err = e^2 * sqrt((2/3)/2)
        assert!(close(e.ppl, 2f64.exp(), 1e-12));
        assert!(close(e.err, 2f64.exp() * (1.0f64 / 3.0).sqrt(), 1e-12));
        assert_eq!(e.tokens, 3);
    }

    #[test]
    fn kld_of_a_model_with_itself_is_zero() {
        let mut lp = Vec::new();
        let mut acc = KldAccumulator::default();
        for row in [[0.1f32, 2.0, -1.0, 0.5], [3.0, 0.0, 0.0, -2.0]] {
            log_softmax(&row, &mut lp);
            acc.push(&lp, &lp, 1);
        }
        let s = acc.finish();
        assert_eq!(s.mean_kld, 0.0);
        assert_eq!(s.kld_max, 0.0);
        assert_eq!(s.same_top_pct, 100.0);
        assert_eq!(s.rms_dp_pct, 0.0);
        assert_eq!(s.delta_ppl, 0.0);
    }

    #[test]
    fn kld_by_hand() {
        // ref p = (0.5, 0.5), new q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3)
        let r = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.25f64.ln(), 0.75f64.ln()];
        let mut acc = KldAccumulator::default();
        acc.push(&r, &q, 0);
        let s = acc.finish();
        let want = 0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln();
        assert!(close(s.mean_kld, want, 1e-12));
        // p_new(0) - p_ref(0) = -0.25 -> RMS 25 %
        assert!(close(s.rms_dp_pct, 25.0, 1e-9));
        // ref top: tie -> index 0; new top: 1
        assert_eq!(s.same_top_pct, 0.0);
        assert!(close(s.delta_ppl, 4.0 - 2.0, 1e-12));
    }

    #[test]
    fn accuracy_standard_error() {
        let a = Accuracy::new(3, 4);
        assert_eq!(a.acc, 0.75);
        assert!(close(a.stderr, (0.75f64 * 0.25 / 3.0).sqrt(), 1e-12));
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let mut lp = Vec::new();
        log_softmax(&[1.0, 2.0, 3.0], &mut lp);
        let s: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!(close(s, 1.0, 1e-12));
        assert!(close(lp[2] - lp[1], 1.0, 1e-12));
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 0.0]), 1);
    }
}
