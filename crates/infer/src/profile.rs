//! Where the time of a forward pass goes: wall time per section of the pass, summed over the
//! passes of a session, kept apart for prompt batches (prefill) and single tokens (decode).
//!
//! Off unless asked for ([`crate::Session::enable_profile`], `slmpack run --profile`): a pass
//! then reads the monotonic clock once per section (about 300 times a token for a 30-layer
//! model, a few microseconds). The sections tile the pass, so their sum is the pass's time.

use std::time::Instant;

/// A part of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Token embeddings and the rotation angles of the batch.
    Embed,
    /// RMS norms, residual adds, biases and SwiGLU: the per-element work between products.
    Elementwise,
    /// The Q, K and V products.
    Qkv,
    /// RoPE, and Q, K and V rounded to f16 into the cache.
    Rope,
    /// Decode's K·Q: the new query against every key in the cache.
    Kq,
    /// Decode's softmax of the scores (and the new V column into the cache).
    Softmax,
    /// Decode's P·V: the probabilities against the V rows.
    Pv,
    /// Prefill's attention (K·Q, softmax and P·V per head and block of queries).
    Attention,
    /// The attention output product.
    Wo,
    /// The gate and up products.
    GateUp,
    /// The down product.
    Down,
    /// The output norm and the logits product.
    Output,
}

impl Section {
    /// Every section, in the order of a pass.
    pub const ALL: [Section; 12] = [
        Section::Embed,
        Section::Elementwise,
        Section::Qkv,
        Section::Rope,
        Section::Kq,
        Section::Softmax,
        Section::Pv,
        Section::Attention,
        Section::Wo,
        Section::GateUp,
        Section::Down,
        Section::Output,
    ];

    /// Its name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Section::Embed => "embed",
            Section::Elementwise => "elementwise",
            Section::Qkv => "qkv",
            Section::Rope => "rope_cache",
            Section::Kq => "kq",
            Section::Softmax => "softmax",
            Section::Pv => "pv",
            Section::Attention => "attention",
            Section::Wo => "wo",
            Section::GateUp => "gate_up",
            Section::Down => "down",
            Section::Output => "output",
        }
    }
}

/// Time per section over some forward passes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    /// Forward passes counted.
    pub passes: usize,
    /// Tokens those passes processed.
    pub tokens: usize,
    ns: [u64; Section::ALL.len()],
}

impl Profile {
    /// Milliseconds spent in `s`.
    pub fn ms(&self, s: Section) -> f64 {
        self.ns[s as usize] as f64 / 1e6
    }

    /// Milliseconds over every section.
    pub fn total_ms(&self) -> f64 {
        self.ns.iter().sum::<u64>() as f64 / 1e6
    }

    /// `(section, ms)` for the sections that took any time, in the order of a pass.
    pub fn sections(&self) -> impl Iterator<Item = (Section, f64)> + '_ {
        Section::ALL
            .into_iter()
            .filter(|&s| self.ns[s as usize] > 0)
            .map(|s| (s, self.ms(s)))
    }

    fn add(&mut self, tokens: usize, ns: &[u64; Section::ALL.len()]) {
        self.passes += 1;
        self.tokens += tokens;
        for (a, b) in self.ns.iter_mut().zip(ns) {
            *a += b;
        }
    }
}

/// The profiles of a session: prompt batches and single tokens apart.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiles {
    /// Passes of more than one token.
    pub prefill: Profile,
    /// Passes of one token.
    pub decode: Profile,
}

impl Profiles {
    pub(crate) fn add(&mut self, tokens: usize, laps: &Laps) {
        if let Some(l) = laps.0.as_ref() {
            let p = if tokens > 1 {
                &mut self.prefill
            } else {
                &mut self.decode
            };
            p.add(tokens, &l.ns);
        }
    }
}

struct LapState {
    last: Instant,
    ns: [u64; Section::ALL.len()],
}

/// The clock of one pass: [`Laps::lap`] charges the time since the previous lap to a section.
/// Does nothing when made with `on` false.
pub(crate) struct Laps(Option<LapState>);

impl Laps {
    pub(crate) fn start(on: bool) -> Laps {
        Laps(on.then(|| LapState {
            last: Instant::now(),
            ns: [0; Section::ALL.len()],
        }))
    }

    #[inline]
    pub(crate) fn lap(&mut self, s: Section) {
        if let Some(l) = self.0.as_mut() {
            let now = Instant::now();
            l.ns[s as usize] += (now - l.last).as_nanos() as u64;
            l.last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_charge_each_section_and_split_prefill_from_decode() {
        let mut p = Profiles::default();
        let mut l = Laps::start(true);
        std::thread::sleep(std::time::Duration::from_millis(2));
        l.lap(Section::Qkv);
        l.lap(Section::Down);
        p.add(5, &l);
        assert_eq!((p.prefill.passes, p.prefill.tokens), (1, 5));
        assert!(p.prefill.ms(Section::Qkv) >= 2.0);
        assert_eq!(p.decode, Profile::default());
        let names: Vec<_> = p.prefill.sections().map(|(s, _)| s.name()).collect();
        assert!(
            names.contains(&"qkv") && !names.contains(&"kq"),
            "{names:?}"
        );
        assert!(
            (p.prefill.total_ms() - p.prefill.sections().map(|(_, m)| m).sum::<f64>()).abs() < 1e-9
        );

        let mut off = Laps::start(false);
        off.lap(Section::Kq);
        p.add(1, &off);
        assert_eq!(
            p.decode,
            Profile::default(),
            "a pass not profiled adds nothing"
        );
    }
}
