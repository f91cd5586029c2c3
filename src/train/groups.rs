//! Which parameters train, and at what learning rate: PyTorch's parameter groups, chosen by
//! module path.
//!
//! A [`ParamGroups`] is an ordered list of rules: [`train(pattern, lr_mult)`](ParamGroups::train)
//! and [`freeze(pattern)`](ParamGroups::freeze). Every layer with parameters follows the first
//! rule whose pattern matches its module path; a layer that rule freezes, or that no rule
//! matches, is frozen: it keeps its weights bit for bit, gets no gradient or optimizer memory, and
//! backward runs through it (to reach trainable layers below) only where one exists below it.
//! The [`Freeze`](super::Freeze) policies are shorthands for common rule sets.
//!
//! Module paths are the names a layer's parameters carry in checkpoints, without the parameter
//! (`2` for `2.weight`; [`Network::module_names`]). Patterns:
//! - `head` / `trunk`: every layer of that part of the network;
//! - a module path, which also matches every path below it at a `.` boundary (`layer1` matches
//!   `layer1.0.conv1`, not `layer10`);
//! - `*` anywhere, for any run of characters (`layer*.conv1`, `*`).
//!
//! ```no_run
//! use headswap::{Gpu, nn::{Head, Network}, train::{ParamGroups, TrainConfig, Trainer}};
//! # let gpu = Gpu::new()?;
//! # let data = headswap::data::synthetic::scenes_task_b(64, 16, 2);
//! let mut net = Network::new(&gpu, &[256, 128, 64, 32], Head::labels(4), 1)?;
//! assert_eq!(net.module_names(), ["0", "2", "4", "6"]);
//! // the head at the base rate, the top trunk layer at a tenth of it, the rest frozen
//! let groups = ParamGroups::new().train("head", 1.0).train("4", 0.1);
//! Trainer::new(&gpu, TrainConfig::default()).fine_tune_groups(&mut net, &data, &groups, 2)?;
//! // everything but the layer `2` (Burn's `freeze`, first match wins)
//! let groups = ParamGroups::new().freeze("2").train("*", 1.0);
//! Trainer::new(&gpu, TrainConfig::default()).fine_tune_groups(&mut net, &data, &groups, 2)?;
//! # Ok::<(), headswap::Error>(())
//! ```

use crate::error::{Error, Result};
use crate::nn::Network;

/// Ordered rules choosing the trainable layers and their learning-rate multipliers (see the
/// module docs for the patterns). The first matching rule wins; unmatched layers are frozen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamGroups {
    /// `(pattern, Some(lr_mult))` trains, `(pattern, None)` freezes.
    rules: Vec<(String, Option<f32>)>,
}

impl ParamGroups {
    /// No rule: everything frozen until [`ParamGroups::train`] adds one.
    pub fn new() -> ParamGroups {
        ParamGroups::default()
    }

    /// Trains the layers `pattern` matches (and no earlier rule did) at `lr_mult` × the base rate.
    pub fn train(mut self, pattern: &str, lr_mult: f32) -> ParamGroups {
        self.rules.push((pattern.to_string(), Some(lr_mult)));
        self
    }

    /// Freezes the layers `pattern` matches (and no earlier rule did), whatever later rules say:
    /// `.freeze("layer1").train("*", 1.0)` trains everything but `layer1`.
    pub fn freeze(mut self, pattern: &str) -> ParamGroups {
        self.rules.push((pattern.to_string(), None));
        self
    }

    /// The rules, in order: the learning-rate multiplier of a `train` rule, `None` for `freeze`.
    pub fn rules(&self) -> &[(String, Option<f32>)] {
        &self.rules
    }

    /// Per layer (trunk then head, as [`Network::layers`]): the learning-rate multiplier of a
    /// trainable layer, `None` for a frozen one or one without parameters. Refuses a rule that
    /// matches no layer (a typo would otherwise freeze silently), a multiplier that is negative or
    /// not finite, and a rule set that trains nothing.
    pub fn resolve(&self, net: &Network) -> Result<Vec<Option<f32>>> {
        let names = net.module_names();
        let layers = net.layers();
        let trunk = net.trunk_layers().len();
        let mut mults = vec![None; layers.len()];
        let mut used = vec![false; self.rules.len()];
        for (i, (name, spec)) in names.iter().zip(&layers).enumerate() {
            let part = if i < trunk { "trunk" } else { "head" };
            if let Some(r) = self.rules.iter().position(|(pattern, _)| matches(pattern, name, part)) {
                used[r] = true;
                if spec.has_params() {
                    mults[i] = self.rules[r].1;
                }
            }
        }
        for ((pattern, mult), used) in self.rules.iter().zip(used) {
            if let Some(mult) = mult
                && !(mult.is_finite() && *mult >= 0.0)
            {
                return Err(Error::invalid(format!("the learning-rate multiplier of {pattern:?} must be finite and ≥ 0, got {mult}")));
            }
            if !used {
                return Err(Error::invalid(format!(
                    "{pattern:?} matches no layer; the layers are {} (trunk) and {} (head)",
                    names[..trunk].join(", "),
                    names[trunk..].join(", ")
                )));
            }
        }
        if mults.iter().all(Option::is_none) {
            return Err(Error::invalid("the parameter groups train nothing: every layer with parameters is frozen"));
        }
        Ok(mults)
    }

    /// The rules a [`Freeze`] policy stands for, with `lowest` the lowest trainable layer it
    /// chose: the head at the base rate, the trunk's layers from `lowest` up at `trunk_lr_mult`.
    pub(crate) fn of_freeze(net: &Network, lowest: usize, trunk_lr_mult: f32) -> ParamGroups {
        let names = net.module_names();
        let layers = net.layers();
        let mut groups = ParamGroups::new().train("head", 1.0);
        for i in lowest..net.trunk_layers().len() {
            if layers[i].has_params() {
                groups = groups.train(&names[i], trunk_lr_mult);
            }
        }
        groups
    }
}

/// Whether `pattern` selects module `name` of network part `part` (`trunk` or `head`).
fn matches(pattern: &str, name: &str, part: &str) -> bool {
    if pattern == part {
        return true;
    }
    if pattern.contains('*') {
        return glob(pattern.as_bytes(), name.as_bytes());
    }
    name == pattern || name.strip_prefix(pattern).is_some_and(|rest| rest.starts_with('.'))
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| glob(rest, &s[k..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// One contiguous run of trainable parameters in one arena, at one learning-rate multiplier: a
/// PyTorch param group over a flat slice, and the unit the optimizer and the gradient buffers
/// are allocated for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TrainRange {
    /// Whether the range lies in the head arena (else the trunk's).
    pub head: bool,
    /// Element offsets in the arena: `start..end`.
    pub start: usize,
    pub end: usize,
    pub lr_mult: f32,
    /// The layers (network indices) whose parameters it holds.
    pub layers: std::ops::Range<usize>,
}

/// The trainable ranges of `net` for per-layer multipliers `mults` ([`ParamGroups::resolve`]):
/// adjacent trainable layers of one arena at the same multiplier share a range (layers without
/// parameters occupy no arena space and do not break a run). Ranges come in network order.
pub(crate) fn train_ranges(net: &Network, mults: &[Option<f32>]) -> Vec<TrainRange> {
    let trunk = net.trunk_layers().len();
    let layers = net.layers();
    let mut ranges: Vec<TrainRange> = Vec::new();
    for (i, spec) in layers.iter().enumerate() {
        if !spec.has_params() {
            continue;
        }
        let (arena, slot) = net.slot(i);
        let head = i >= trunk;
        let Some(mult) = mults[i] else { continue };
        match ranges.last_mut() {
            // bit-equal multipliers only: a range is one learning rate
            Some(r) if r.head == head && r.end == slot.w && r.lr_mult.to_bits() == mult.to_bits() => {
                r.end = slot.end;
                r.layers.end = i + 1;
            }
            _ => ranges.push(TrainRange { head, start: slot.w, end: slot.end, lr_mult: mult, layers: i..i + 1 }),
        }
        debug_assert!(slot.end <= arena.len);
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_at_dot_boundaries_and_globs() {
        assert!(matches("layer1", "layer1.0.conv1", "trunk"));
        assert!(!matches("layer1", "layer10.conv1", "trunk"));
        assert!(matches("layer1.0.conv1", "layer1.0.conv1", "trunk"));
        assert!(matches("layer*.conv1", "layer3.1.conv1", "trunk"));
        assert!(!matches("layer*.conv1", "layer3.1.conv2", "trunk"));
        assert!(matches("*", "fc", "head"));
        assert!(matches("head", "6", "head"));
        assert!(!matches("head", "4", "trunk"));
        assert!(matches("trunk", "4", "trunk"));
        assert!(!matches("4", "40", "trunk"));
    }
}
