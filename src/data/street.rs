//! Seeded synthetic street scenes for multi-task learning: which objects a scene shows
//! (pedestrians, cars, stop signs, traffic lights), what kind of street it is, and how many
//! objects there are — three tasks read from one image.
//!
//! The images are drawn by the [`synthetic`](super::synthetic) renderer (grayscale,
//! `size × size`, default 16, values in `[0, 1]`, anti-aliased shapes, triangular pixel noise),
//! each kind of object standing for itself as one shape:
//!
//! | object        | drawn as                      |
//! |---------------|-------------------------------|
//! | pedestrian    | a vertical bar (a standing figure) |
//! | car           | a horizontal bar              |
//! | stop sign     | a diamond (a sign on its post) |
//! | traffic light | a ring (a lamp)               |
//! | tree          | a triangle; scenery, neither labelled nor counted |
//!
//! A scene has four places (the quadrants of a 2×2 layout, jittered inside them, so objects never
//! overlap); each place is empty or holds one object, drawn independently with probabilities that
//! depend on the [`SceneType`], which also sets the range of the background's level:
//!
//! | scene       | background    | pedestrian | car  | stop sign | traffic light | tree | empty |
//! |-------------|---------------|-----------:|-----:|----------:|--------------:|-----:|------:|
//! | highway     | `[0.00, 0.10)` | 0.04 | 0.50 | 0.03 | 0.08 | 0.10 | 0.25 |
//! | downtown    | `[0.05, 0.15)` | 0.35 | 0.20 | 0.05 | 0.20 | 0.02 | 0.18 |
//! | residential | `[0.02, 0.12)` | 0.12 | 0.12 | 0.20 | 0.02 | 0.25 | 0.29 |
//!
//! The scene type is uniform over the three. Neither the background (the ranges overlap) nor the
//! objects (every object appears in every scene) tell it for sure, so it is learnable but not
//! trivially. The targets ([`Targets::Heads`]) are:
//!
//! * `objects` ([`HEAD_OBJECTS`]): 4 labels, 1 where at least one object of that kind is in the
//!   scene. With `unknown > 0`, that fraction of the examples (drawn per example) has its
//!   stop-sign and traffic-light labels unknown (NaN), as data annotated before signs and lights
//!   were: a labels head masks them out.
//! * `scene` ([`HEAD_SCENE`]): 3 classes, the [`SceneType`].
//! * `count` ([`HEAD_COUNT`]): 1 value, the number of objects in the scene (0–4; trees do not
//!   count), for a regression head.
//!
//! The layout of every scene ([`layouts`]) and its rendering come from separate seeded streams, so
//! the same `(n, seed)` gives the same layouts at every image size, and the same
//! `(n, size, seed, unknown)` the same data, bit for bit, on every platform.

use super::synthetic::{Object, Shape, clamp_size, render_on};
use super::{Dataset, HeadTargets, Targets, check_n};
use crate::{Error, Result, Rng};

/// The name of the labels head's targets: which objects the scene shows.
pub const HEAD_OBJECTS: &str = "objects";
/// The name of the classes head's targets: the [`SceneType`].
pub const HEAD_SCENE: &str = "scene";
/// The name of the regression head's targets: how many objects the scene shows.
pub const HEAD_COUNT: &str = "count";
/// Places for objects in one scene (the quadrants of a 2×2 layout).
pub const PLACES: usize = 4;

/// What a place of a scene holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Thing {
    Pedestrian,
    Car,
    StopSign,
    TrafficLight,
    /// Scenery: drawn, but neither labelled nor counted.
    Tree,
}

impl Thing {
    /// The labelled objects, in label order.
    pub const OBJECTS: [Thing; 4] = [Thing::Pedestrian, Thing::Car, Thing::StopSign, Thing::TrafficLight];

    /// "pedestrian", "car", "stop sign", "traffic light", "tree".
    pub fn name(self) -> &'static str {
        match self {
            Thing::Pedestrian => "pedestrian",
            Thing::Car => "car",
            Thing::StopSign => "stop sign",
            Thing::TrafficLight => "traffic light",
            Thing::Tree => "tree",
        }
    }

    /// The shape that stands for it in the images.
    pub fn shape(self) -> Shape {
        match self {
            Thing::Pedestrian => Shape::VBar,
            Thing::Car => Shape::HBar,
            Thing::StopSign => Shape::Diamond,
            Thing::TrafficLight => Shape::Ring,
            Thing::Tree => Shape::Triangle,
        }
    }

    /// Its label index, `None` for a tree.
    pub fn label(self) -> Option<usize> {
        Thing::OBJECTS.iter().position(|&t| t == self)
    }
}

/// The kind of street a scene shows (the classes head's target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SceneType {
    Highway,
    Downtown,
    Residential,
}

impl SceneType {
    /// All scene types, in class order.
    pub const ALL: [SceneType; 3] = [SceneType::Highway, SceneType::Downtown, SceneType::Residential];

    /// "highway", "downtown", "residential".
    pub fn name(self) -> &'static str {
        match self {
            SceneType::Highway => "highway",
            SceneType::Downtown => "downtown",
            SceneType::Residential => "residential",
        }
    }

    /// The background level's range `[lo, hi)`.
    pub fn background(self) -> (f64, f64) {
        match self {
            SceneType::Highway => (0.0, 0.10),
            SceneType::Downtown => (0.05, 0.15),
            SceneType::Residential => (0.02, 0.12),
        }
    }

    /// The probability that a place holds each of pedestrian, car, stop sign, traffic light,
    /// tree (the rest: empty).
    pub fn priors(self) -> [f64; 5] {
        match self {
            SceneType::Highway => [0.04, 0.50, 0.03, 0.08, 0.10],
            SceneType::Downtown => [0.35, 0.20, 0.05, 0.20, 0.02],
            SceneType::Residential => [0.12, 0.12, 0.20, 0.02, 0.25],
        }
    }
}

/// One scene's layout: its type and what each of its [`PLACES`] holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StreetLayout {
    pub scene: SceneType,
    pub places: [Option<Thing>; PLACES],
}

impl StreetLayout {
    /// How many labelled objects (not trees) the scene shows.
    pub fn count(&self) -> usize {
        self.places.iter().flatten().filter(|t| t.label().is_some()).count()
    }

    /// Whether each of [`Thing::OBJECTS`] is in the scene.
    pub fn present(&self) -> [bool; 4] {
        let mut p = [false; 4];
        for j in self.places.iter().flatten().filter_map(|t| t.label()) {
            p[j] = true;
        }
        p
    }
}

/// The layouts of the first `n` scenes of `seed` (the same ones [`street_scenes`] draws).
pub fn layouts(n: usize, seed: u64) -> Vec<StreetLayout> {
    let mut rng = Rng::new(seed ^ 0x5EED_5700_0000_0001);
    (0..n)
        .map(|_| {
            let scene = SceneType::ALL[rng.below(SceneType::ALL.len() as u64) as usize];
            let priors = scene.priors();
            let things = [Thing::Pedestrian, Thing::Car, Thing::StopSign, Thing::TrafficLight, Thing::Tree];
            let mut places = [None; PLACES];
            for place in &mut places {
                let u = rng.next_f64();
                let mut acc = 0.0;
                for (&p, &t) in priors.iter().zip(&things) {
                    acc += p;
                    if u < acc {
                        *place = Some(t);
                        break;
                    }
                }
            }
            StreetLayout { scene, places }
        })
        .collect()
}

/// `n` street scenes of `size × size` (clamped as [`synthetic`](super::synthetic) clamps it)
/// with the targets of the three heads (see the module docs); a fraction `unknown` of the
/// examples has unknown stop-sign and traffic-light labels. Input shape `[1, size, size]`.
///
/// Errors: [`Error::InvalidInput`] for `unknown` outside `[0, 1]` or images past
/// [`MAX_BYTES`](super::MAX_BYTES).
///
/// ```
/// use headswap::data::street::{HEAD_COUNT, HEAD_OBJECTS, street_scenes};
/// let data = street_scenes(100, 16, 7, 0.2)?;
/// data.validate()?;
/// assert!(data.targets.head(HEAD_OBJECTS).is_some() && data.targets.head(HEAD_COUNT).is_some());
/// # Ok::<(), headswap::Error>(())
/// ```
pub fn street_scenes(n: usize, size: usize, seed: u64, unknown: f64) -> Result<Dataset> {
    if !(0.0..=1.0).contains(&unknown) {
        return Err(Error::invalid(format!("street scenes: the fraction of unknown labels must be in [0, 1], not {unknown}")));
    }
    let size = clamp_size(size);
    check_n("street scenes", n, size)?;
    let d = size * size;
    let s = size as f32;
    let cell = s / 2.0;
    let k = Thing::OBJECTS.len();
    let scenes = layouts(n, seed);
    let mut draw = Rng::new(seed ^ 0x5EED_5700_0000_0002);
    let mut mask = Rng::new(seed ^ 0x5EED_5700_0000_0003);
    let mut x = vec![0f32; n * d];
    let mut labels = vec![0f32; n * k];
    let mut classes = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut objects: Vec<Object> = Vec::with_capacity(PLACES);
    for ((img, y), layout) in x.chunks_exact_mut(d).zip(labels.chunks_exact_mut(k)).zip(&scenes) {
        objects.clear();
        for (q, thing) in layout.places.iter().enumerate() {
            // drawn for every place, so that what one place holds moves no other's draws
            let r = draw.uniform(0.17, 0.22) as f32 * s;
            let (ox, oy) = ((q % 2) as f32 * cell, (q / 2) as f32 * cell);
            let lo = r + 0.3;
            let hi = (cell - r - 0.3).max(lo);
            let cx = ox + lo + (hi - lo) * draw.next_f64() as f32;
            let cy = oy + lo + (hi - lo) * draw.next_f64() as f32;
            if let Some(t) = thing {
                objects.push(Object { shape: t.shape(), cx, cy, r });
            }
        }
        let (lo, hi) = layout.scene.background();
        let bg = draw.uniform(lo, hi) as f32;
        let fg = draw.uniform(0.6, 1.0) as f32;
        render_on(img, size, &objects, bg, fg, &mut draw);
        for (v, p) in y.iter_mut().zip(layout.present()) {
            *v = if p { 1.0 } else { 0.0 };
        }
        if mask.next_f64() < unknown {
            for t in [Thing::StopSign, Thing::TrafficLight] {
                y[t.label().unwrap_or(0)] = f32::NAN;
            }
        }
        classes.push(SceneType::ALL.iter().position(|&t| t == layout.scene).unwrap_or(0) as u32);
        counts.push(layout.count() as f32);
    }
    Ok(Dataset {
        x,
        n,
        d,
        input_shape: vec![1, size, size],
        targets: Targets::Heads(vec![
            HeadTargets::new(HEAD_OBJECTS, Targets::Labels { y: labels, k }).with_names(Thing::OBJECTS.iter().map(|t| t.name())),
            HeadTargets::new(HEAD_SCENE, Targets::Classes { y: classes, num_classes: SceneType::ALL.len() })
                .with_names(SceneType::ALL.iter().map(|t| t.name())),
            HeadTargets::new(HEAD_COUNT, Targets::Regression { y: counts, k: 1 }).with_names(["objects"]),
        ]),
        label_names: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(data: &'a Dataset, name: &str) -> &'a Targets {
        data.targets.head(name).unwrap()
    }

    #[test]
    fn deterministic_and_seeded() {
        let a = street_scenes(300, 16, 5, 0.25).unwrap();
        a.validate().unwrap();
        let b = street_scenes(300, 16, 5, 0.25).unwrap();
        // NaN != NaN: compare bits
        assert_eq!(a.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        let bits = |d: &Dataset| match head(d, HEAD_OBJECTS) {
            Targets::Labels { y, .. } => y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            _ => unreachable!(),
        };
        assert_eq!(bits(&a), bits(&b));
        assert_eq!(head(&a, HEAD_SCENE), head(&b, HEAD_SCENE));
        assert_eq!(head(&a, HEAD_COUNT), head(&b, HEAD_COUNT));
        assert_ne!(a.x, street_scenes(300, 16, 6, 0.25).unwrap().x);
        assert!(a.x.iter().all(|v| (0.0..=1.0).contains(v)));
        // the layouts do not depend on the image size
        let big = street_scenes(300, 24, 5, 0.25).unwrap();
        assert_eq!(big.input_shape, vec![1, 24, 24]);
        assert_eq!(head(&big, HEAD_COUNT), head(&a, HEAD_COUNT));
    }

    #[test]
    fn labels_classes_and_counts_agree_with_the_layouts() {
        let n = 2000;
        let data = street_scenes(n, 16, 11, 0.3).unwrap();
        let scenes = layouts(n, 11);
        let (Targets::Labels { y: labels, k: 4 }, Targets::Classes { y: classes, num_classes: 3 }, Targets::Regression { y: counts, k: 1 }) =
            (head(&data, HEAD_OBJECTS), head(&data, HEAD_SCENE), head(&data, HEAD_COUNT))
        else {
            panic!("unexpected targets")
        };
        let mut unknown = 0;
        for (i, l) in scenes.iter().enumerate() {
            assert_eq!(SceneType::ALL[classes[i] as usize], l.scene);
            assert_eq!(counts[i], l.count() as f32);
            let row = &labels[i * 4..i * 4 + 4];
            // pedestrians and cars are always known; signs and lights both known or both not
            assert_eq!([row[0] == 1.0, row[1] == 1.0], [l.present()[0], l.present()[1]]);
            assert_eq!(row[2].is_nan(), row[3].is_nan());
            if row[2].is_nan() {
                unknown += 1;
            } else {
                assert_eq!([row[2] == 1.0, row[3] == 1.0], [l.present()[2], l.present()[3]]);
            }
            // a count is at least the number of kinds present, at most the places
            let kinds = l.present().iter().filter(|&&p| p).count();
            assert!(kinds <= l.count() && l.count() <= PLACES);
        }
        let rate = unknown as f64 / n as f64;
        assert!((0.25..0.35).contains(&rate), "unknown rate {rate}");
        // every scene type occurs, and the scene changes the priors: cars on highways, pedestrians downtown
        let share = |scene: SceneType, j: usize| {
            let of: Vec<&StreetLayout> = scenes.iter().filter(|l| l.scene == scene).collect();
            assert!(of.len() > n / 5, "{scene:?}: {}", of.len());
            of.iter().filter(|l| l.present()[j]).count() as f64 / of.len() as f64
        };
        assert!(share(SceneType::Highway, 1) > share(SceneType::Downtown, 1) + 0.2);
        assert!(share(SceneType::Downtown, 0) > share(SceneType::Highway, 0) + 0.4);
        assert!(share(SceneType::Residential, 2) > share(SceneType::Downtown, 2) + 0.3);
        // every count from 0 to 4 occurs
        for c in 0..=PLACES {
            assert!(scenes.iter().any(|l| l.count() == c), "no scene of {c} objects");
        }
        // no unknown labels asked for, none given
        let clean = street_scenes(200, 16, 11, 0.0).unwrap();
        assert!(matches!(head(&clean, HEAD_OBJECTS), Targets::Labels { y, .. } if y.iter().all(|v| !v.is_nan())));
    }

    #[test]
    fn objects_are_drawn_where_the_layout_puts_them() {
        // Inside a place (one pixel off its edges, which no neighbour reaches), an empty place is
        // background plus noise (< 0.06 above it), an occupied one has a pixel well above it.
        let size = 16;
        let half = size / 2;
        let data = street_scenes(300, size, 3, 0.0).unwrap();
        for (img, l) in data.x.chunks_exact(size * size).zip(layouts(300, 3)) {
            let mut sorted = img.to_vec();
            sorted.sort_by(f32::total_cmp);
            let background = sorted[sorted.len() / 2];
            for (q, thing) in l.places.iter().enumerate() {
                let (ox, oy) = ((q % 2) * half, (q / 2) * half);
                let brightest = (oy + 1..oy + half - 1)
                    .flat_map(|y| (ox + 1..ox + half - 1).map(move |x| y * size + x))
                    .map(|i| img[i])
                    .fold(0f32, f32::max);
                assert_eq!(brightest > background + 0.09, thing.is_some(), "place {q} of {l:?}: {brightest} on {background}");
            }
        }
    }

    #[test]
    fn a_bad_unknown_fraction_is_refused() {
        assert!(street_scenes(10, 16, 1, 1.5).is_err());
        assert!(street_scenes(10, 16, 1, f64::NAN).is_err());
    }
}
