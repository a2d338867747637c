//! `plain-background`: the built-in engine, no weights, our own code.
//!
//! # When to use it
//! Product shots, scans, logos, studio portraits and other pictures on a **plain or smoothly
//! graded background** (a white sweep, a sky going from dark to light blue, a coloured paper)
//! that touches most of the image border. It works at full resolution (crisp edges on 12 MP
//! images), needs no model file and no ONNX Runtime; a 12 MP JPEG takes ~0.66 s end to end
//! (decode, mask, PNG) on 2 CPU cores, about twice the pipeline around a trivial ONNX model.
//! Use a neural model (`u2net`, `birefnet-*`, …) for cluttered or textured backgrounds, for
//! subjects whose colour matches the background, or when the subject covers most of the border.
//!
//! # Algorithm
//! 1. **Denoise**: a 3×3 box filter; the region growing below runs on the filtered colours.
//! 2. **Background model**: a per-channel quadratic surface `c(u,v) = a0 + a1·u + a2·v + a3·u·v +
//!    a4·u² + a5·v²` fitted to the outer ring of pixels by iteratively trimmed least squares
//!    (start: the border's median colour; each pass drops samples whose residual exceeds
//!    3× the median residual), so an object touching the border does not bias it. The inliers'
//!    median residual `n` is the border's own noise level and sets every tolerance.
//! 3. **Region growing** from the border pixels that fit the model (within `max(4n, 12)`), 4-connected,
//!    breadth-first. A neighbour joins the background when (a) it is close to the pixel it is
//!    reached from (`max(4n, 6)`: stops at edges), (b) close to a running background estimate
//!    carried along the path (an exponential moving average of the colours, `max(5n, 12)`: follows
//!    smooth gradients but not the slow ramp of a blurred edge) and (c) that estimate stays
//!    within the colour range of the background border pixels widened by `max(8n, 32)` per
//!    channel (no drift into the subject through a long shaded path; a range rather than the
//!    quadratic surface, whose extrapolation to the middle of the image is unreliable for
//!    vignettes and other non-quadratic falloffs).
//! 4. **Holes**: anything the growing did not reach is foreground, so background-coloured areas
//!    enclosed by the subject (the inside of a ring) stay opaque; foreground specks smaller than
//!    `max(16, pixels/40 000)` (noise in the background) are dropped.
//! 5. **Soft edges**: in a band of ±2 px around the boundary, alpha is the projection of the pixel
//!    colour onto the segment from the local background colour `B` to the local foreground colour
//!    `F` (means of confident pixels in a 9×9 window), `α = (c − B)·(F − B) / |F − B|²`, with a
//!    dead zone of the noise level at both ends; where the contrast is too low or no confident
//!    foreground is near (thin structures), the hard decision is kept.

use std::collections::VecDeque;

use image::{GrayImage, RgbImage};
use shared::models::PLAIN_BACKGROUND;

use crate::engine::{Engine, EngineError};

/// Label of a pixel during segmentation.
const UNSEEN: u8 = 0;
const BG: u8 = 1;
const FG_KEPT: u8 = 2;

/// Tuning of [`PlainBackground`]. The defaults are the documented algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// Weight of the newest colour in the running background estimate (0–1).
    pub ema: f32,
    /// Half width of the soft-edge band in px.
    pub band: u32,
    /// Half width of the window that estimates the local colours in the band, px.
    pub window: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            ema: 0.15,
            band: 2,
            window: 4,
        }
    }
}

/// The built-in background-removal engine; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct PlainBackground {
    /// Algorithm constants.
    pub tuning: Tuning,
}

impl Engine for PlainBackground {
    fn name(&self) -> &str {
        PLAIN_BACKGROUND
    }

    fn segment(&self, image: &RgbImage) -> Result<GrayImage, EngineError> {
        let analysis = self.analyse(image);
        analysis.check()?;
        Ok(analysis.mask)
    }
}

/// Largest border noise (median residual of the border fit, RGB units on the filtered image) of
/// a plain background. The bundled rocket photo (a graded sky) measures 5.4, the cluttered astronaut portrait 70.
pub const MAX_BORDER_NOISE: f32 = 12.0;
/// Distance (RGB units, filtered image) within which a border sample fits the background model.
pub const BORDER_FIT_TOLERANCE: f32 = 16.0;
/// Smallest share of the border that must fit the background model: a subject may cover much
/// of the border (a portrait's shoulders, a product on the bottom edge; the rocket photo's
/// towers and ground leave 60 % of its border to the sky, the astronaut portrait 7 %).
pub const MIN_BORDER_FIT: f32 = 0.3;
/// Smallest share of the picture a plausible cutout keeps (0.5 %).
pub const MIN_FOREGROUND: f64 = 0.005;
/// Largest share of the picture a plausible cutout keeps (99.5 %).
pub const MAX_FOREGROUND: f64 = 0.995;

/// The mask of [`PlainBackground::analyse`] with what the border fit says about the picture.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The foreground mask (same size as the image; 0 background … 255 foreground).
    pub mask: GrayImage,
    /// Median residual of the border samples that fit the background model (RGB units, 0–441).
    pub border_noise: f32,
    /// Share of the border samples that fit the background model, 0.0–1.0.
    pub border_fit: f32,
    /// Share of the picture the mask keeps, 0.0–1.0 (mean mask value / 255).
    pub foreground_fraction: f64,
}

impl Analysis {
    /// Whether the mask can be trusted: a plain border ([`MAX_BORDER_NOISE`], [`MIN_BORDER_FIT`])
    /// and a foreground between [`MIN_FOREGROUND`] and [`MAX_FOREGROUND`] of the picture.
    ///
    /// # Errors
    /// [`EngineError::NoPlainBackground`] saying which test failed and pointing to a neural model.
    pub fn check(&self) -> Result<(), EngineError> {
        let why = if self.border_noise > MAX_BORDER_NOISE || self.border_fit < MIN_BORDER_FIT {
            format!(
                "the image border is not a plain background (noise {:.1}, {:.0} % of the border fits one colour model)",
                self.border_noise,
                self.border_fit * 100.0
            )
        } else if !(MIN_FOREGROUND..=MAX_FOREGROUND).contains(&self.foreground_fraction) {
            format!(
                "the cutout would keep {:.2} % of the image, which is not a plausible subject",
                self.foreground_fraction * 100.0
            )
        } else {
            return Ok(());
        };
        Err(EngineError::NoPlainBackground(format!(
            "{PLAIN_BACKGROUND} cannot cut this image out: {why}; use a neural model such as isnet or u2netp"
        )))
    }
}

impl PlainBackground {
    /// The foreground mask of `image` (same size; 0 background … 255 foreground), unchecked:
    /// [`Engine::segment`] refuses pictures that [`Analysis::check`] rejects.
    pub fn mask(&self, image: &RgbImage) -> GrayImage {
        self.analyse(image).mask
    }

    /// The mask and the border statistics that decide whether it can be trusted. Images under
    /// 3 px on a side get a fully opaque mask (there is no border to learn from).
    pub fn analyse(&self, image: &RgbImage) -> Analysis {
        let (w, h) = image.dimensions();
        if w < 3 || h < 3 {
            let mask = GrayImage::from_pixel(w, h, image::Luma([255]));
            return Analysis {
                foreground_fraction: crate::pipeline::foreground_fraction(&mask),
                mask,
                border_noise: 0.0,
                border_fit: 1.0,
            };
        }
        let smooth = box3(image);
        let fit = fit_border(&smooth, image);
        let n = fit.noise;
        let tol = Tolerances {
            seed: (4.0 * n).max(12.0),
            step: (4.0 * n).max(6.0),
            reference: (5.0 * n).max(12.0),
            drift: (8.0 * n).max(32.0),
        };
        let mut labels = grow(&smooth, &fit, &tol, self.tuning.ema);
        drop_specks(
            &mut labels,
            w,
            h,
            ((w as usize * h as usize) / 40_000).max(16),
        );
        let mask = soften(image, &fit, &labels, tol.step, self.tuning);
        Analysis {
            foreground_fraction: crate::pipeline::foreground_fraction(&mask),
            mask,
            border_noise: fit.noise,
            border_fit: fit.inlier_share,
        }
    }
}

struct Tolerances {
    seed: f32,
    step: f32,
    reference: f32,
    drift: f32,
}

/// 3×3 box filter with clamped edges, rounded to u8.
fn box3(img: &RgbImage) -> Vec<[u8; 3]> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let hsum = |y: usize| -> Vec<[u16; 3]> {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        (0..w)
            .map(|x| {
                let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let mut s = [0u16; 3];
                for (c, v) in s.iter_mut().enumerate() {
                    *v = u16::from(row[l * 3 + c])
                        + u16::from(row[x * 3 + c])
                        + u16::from(row[r * 3 + c]);
                }
                s
            })
            .collect()
    };
    let mut out = Vec::with_capacity(w * h);
    let mut above = hsum(0);
    let mut here = above.clone();
    for y in 0..h {
        let below = if y + 1 < h { hsum(y + 1) } else { here.clone() };
        for x in 0..w {
            let mut px = [0u8; 3];
            for (c, v) in px.iter_mut().enumerate() {
                let s = u32::from(above[x][c]) + u32::from(here[x][c]) + u32::from(below[x][c]);
                *v = ((s + 4) / 9) as u8;
            }
            out.push(px);
        }
        above = std::mem::replace(&mut here, below);
    }
    out
}

/// Per-channel quadratic surface over normalised coordinates, evaluated per row quickly.
#[derive(Debug, Clone)]
struct BgModel {
    coef: [[f64; 6]; 3],
    inv_w: f64,
    inv_h: f64,
    /// Per column: (u, u²).
    us: Vec<(f32, f32)>,
    /// Per row and channel: c0 + c1·u + c2·u².
    rows: Vec<[[f32; 3]; 3]>,
}

fn basis(u: f64, v: f64) -> [f64; 6] {
    [1.0, u, v, u * v, u * u, v * v]
}

impl BgModel {
    fn new(coef: [[f64; 6]; 3], w: u32, h: u32) -> Self {
        let inv_w = 1.0 / f64::from((w - 1).max(1));
        let inv_h = 1.0 / f64::from((h - 1).max(1));
        let us = (0..w)
            .map(|x| {
                let u = f64::from(x) * inv_w;
                (u as f32, (u * u) as f32)
            })
            .collect();
        let rows = (0..h)
            .map(|y| {
                let v = f64::from(y) * inv_h;
                let mut r = [[0f32; 3]; 3];
                for (c, k) in coef.iter().enumerate() {
                    r[c] = [
                        (k[0] + k[2] * v + k[5] * v * v) as f32,
                        (k[1] + k[3] * v) as f32,
                        k[4] as f32,
                    ];
                }
                r
            })
            .collect();
        Self {
            coef,
            inv_w,
            inv_h,
            us,
            rows,
        }
    }

    #[inline]
    fn at(&self, x: usize, y: usize) -> [f32; 3] {
        let (u, u2) = self.us[x];
        let r = &self.rows[y];
        [
            r[0][0] + r[0][1] * u + r[0][2] * u2,
            r[1][0] + r[1][1] * u + r[1][2] * u2,
            r[2][0] + r[2][1] * u + r[2][2] * u2,
        ]
    }

    fn at_f64(&self, x: u32, y: u32) -> [f64; 3] {
        let b = basis(f64::from(x) * self.inv_w, f64::from(y) * self.inv_h);
        let mut out = [0f64; 3];
        for (o, k) in out.iter_mut().zip(&self.coef) {
            *o = k.iter().zip(&b).map(|(a, b)| a * b).sum();
        }
        out
    }
}

struct BorderFit {
    model: BgModel,
    /// Median residual (Euclidean RGB) of the inlier border samples, filtered image.
    noise: f32,
    /// Same on the unfiltered image.
    noise_raw: f32,
    /// Per-channel minimum and maximum of the inlier border samples (filtered image).
    range: [[f32; 2]; 3],
    /// Share of the border samples within [`BORDER_FIT_TOLERANCE`] of the model, 0.0–1.0.
    inlier_share: f32,
}

/// Outer-ring coordinates (each pixel once), at most ~8 k samples.
fn ring(w: u32, h: u32) -> Vec<(u32, u32)> {
    let perimeter = 2 * (w + h) as usize;
    let stride = perimeter.div_ceil(8192).max(1) as u32;
    let mut pts = Vec::new();
    let mut x = 0;
    while x < w {
        pts.push((x, 0));
        pts.push((x, h - 1));
        x += stride;
    }
    let mut y = 1;
    while y + 1 < h {
        pts.push((0, y));
        pts.push((w - 1, y));
        y += stride;
    }
    pts
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

fn to_f32(p: [u8; 3]) -> [f32; 3] {
    [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]
}

fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, f32::total_cmp).1
}

fn fit_border(smooth: &[[u8; 3]], raw: &RgbImage) -> BorderFit {
    let (w, h) = raw.dimensions();
    let pts = ring(w, h);
    let colour = |(x, y): (u32, u32)| to_f32(smooth[y as usize * w as usize + x as usize]);
    // Start from the median border colour (robust to a subject covering < half the border).
    let mut start = [[0f64; 6]; 3];
    for (c, k) in start.iter_mut().enumerate() {
        let mut ch: Vec<f32> = pts.iter().map(|&p| colour(p)[c]).collect();
        k[0] = f64::from(median(&mut ch));
    }
    let mut model = BgModel::new(start, w, h);
    let residuals = |m: &BgModel| -> Vec<f32> {
        pts.iter()
            .map(|&(x, y)| {
                let e = m.at_f64(x, y);
                dist(colour((x, y)), [e[0] as f32, e[1] as f32, e[2] as f32])
            })
            .collect()
    };
    let mut inliers: Vec<bool> = vec![true; pts.len()];
    for _ in 0..4 {
        let r = residuals(&model);
        let mut sorted = r.clone();
        let cut = (3.0 * median(&mut sorted)).max(6.0);
        inliers = r.iter().map(|&d| d <= cut).collect();
        let coef = least_squares(&pts, &inliers, w, h, colour);
        model = BgModel::new(coef, w, h);
    }
    let r = residuals(&model);
    let mut inlier_r: Vec<f32> = r
        .iter()
        .zip(&inliers)
        .filter(|(_, i)| **i)
        .map(|(d, _)| *d)
        .collect();
    let noise = median(&mut inlier_r);
    let mut raw_r: Vec<f32> = pts
        .iter()
        .zip(&inliers)
        .filter(|(_, i)| **i)
        .map(|(&(x, y), _)| {
            let e = model.at_f64(x, y);
            dist(
                to_f32(raw.get_pixel(x, y).0),
                [e[0] as f32, e[1] as f32, e[2] as f32],
            )
        })
        .collect();
    let noise_raw = median(&mut raw_r);
    let mut range = [[f32::INFINITY, f32::NEG_INFINITY]; 3];
    for (&p, _) in pts.iter().zip(&inliers).filter(|(_, i)| **i) {
        let c = colour(p);
        for ch in 0..3 {
            range[ch] = [range[ch][0].min(c[ch]), range[ch][1].max(c[ch])];
        }
    }
    // The trimmed fit always keeps half the samples as inliers, so the share that fits is
    // measured against a fixed tolerance instead.
    let inlier_share =
        r.iter().filter(|&&d| d <= BORDER_FIT_TOLERANCE).count() as f32 / r.len().max(1) as f32;
    BorderFit {
        model,
        noise,
        noise_raw,
        range,
        inlier_share,
    }
}

/// Ridge-regularised least squares of the quadratic surface, per channel.
fn least_squares(
    pts: &[(u32, u32)],
    use_pt: &[bool],
    w: u32,
    h: u32,
    colour: impl Fn((u32, u32)) -> [f32; 3],
) -> [[f64; 6]; 3] {
    let (inv_w, inv_h) = (
        1.0 / f64::from((w - 1).max(1)),
        1.0 / f64::from((h - 1).max(1)),
    );
    let mut ata = [[0f64; 6]; 6];
    let mut atb = [[0f64; 6]; 3];
    let mut count = 0.0f64;
    for (&p, _) in pts.iter().zip(use_pt).filter(|(_, u)| **u) {
        let b = basis(f64::from(p.0) * inv_w, f64::from(p.1) * inv_h);
        let c = colour(p);
        for i in 0..6 {
            for j in 0..6 {
                ata[i][j] += b[i] * b[j];
            }
            for ch in 0..3 {
                atb[ch][i] += b[i] * f64::from(c[ch]);
            }
        }
        count += 1.0;
    }
    // Terms the inliers do not determine (e.g. all on one side) shrink to 0 instead of exploding.
    for (i, row) in ata.iter_mut().enumerate().skip(1) {
        row[i] += 1e-6 * count.max(1.0);
    }
    ata[0][0] += 1e-9;
    let mut out = [[0f64; 6]; 3];
    for ch in 0..3 {
        out[ch] = solve6(ata, atb[ch]);
    }
    out
}

/// Gaussian elimination with partial pivoting; singular pivots give 0 for that unknown.
#[allow(clippy::needless_range_loop)] // index arithmetic reads best for a 6×6 matrix
fn solve6(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> [f64; 6] {
    for col in 0..6 {
        let pivot = (col..6)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        if a[col][col].abs() < 1e-12 {
            continue;
        }
        for row in col + 1..6 {
            let f = a[row][col] / a[col][col];
            for k in col..6 {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0f64; 6];
    for row in (0..6).rev() {
        if a[row][row].abs() < 1e-12 {
            continue;
        }
        let s: f64 = (row + 1..6).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

/// Breadth-first region growing of the background from the border; returns labels
/// (`BG` or `UNSEEN`).
fn grow(smooth: &[[u8; 3]], fit: &BorderFit, tol: &Tolerances, ema: f32) -> Vec<u8> {
    let model = &fit.model;
    let lo = fit.range.map(|r| r[0] - tol.drift);
    let hi = fit.range.map(|r| r[1] + tol.drift);
    let (w, h) = (model.us.len(), model.rows.len());
    let mut labels = vec![UNSEEN; w * h];
    let mut queue: VecDeque<(u32, [f32; 3])> = VecDeque::new();
    let seed = |x: usize, y: usize, labels: &mut Vec<u8>, queue: &mut VecDeque<(u32, [f32; 3])>| {
        let i = y * w + x;
        if labels[i] != UNSEEN {
            return;
        }
        let c = to_f32(smooth[i]);
        if dist(c, model.at(x, y)) <= tol.seed {
            labels[i] = BG;
            queue.push_back((i as u32, c));
        }
    };
    for x in 0..w {
        seed(x, 0, &mut labels, &mut queue);
        seed(x, h - 1, &mut labels, &mut queue);
    }
    for y in 1..h - 1 {
        seed(0, y, &mut labels, &mut queue);
        seed(w - 1, y, &mut labels, &mut queue);
    }
    while let Some((i, reference)) = queue.pop_front() {
        let i = i as usize;
        let (x, y) = (i % w, i / w);
        let here = to_f32(smooth[i]);
        let mut visit = |j: usize| {
            if labels[j] != UNSEEN {
                return;
            }
            let c = to_f32(smooth[j]);
            if dist(c, here) > tol.step || dist(c, reference) > tol.reference {
                return;
            }
            let next = [
                reference[0] + ema * (c[0] - reference[0]),
                reference[1] + ema * (c[1] - reference[1]),
                reference[2] + ema * (c[2] - reference[2]),
            ];
            if (0..3).any(|ch| next[ch] < lo[ch] || next[ch] > hi[ch]) {
                return;
            }
            labels[j] = BG;
            queue.push_back((j as u32, next));
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < w {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - w);
        }
        if y + 1 < h {
            visit(i + w);
        }
    }
    labels
}

/// Turns foreground components (8-connected) smaller than `min_area` into background and marks
/// the others `FG_KEPT`.
fn drop_specks(labels: &mut [u8], w: u32, h: u32, min_area: usize) {
    let (w, h) = (w as usize, h as usize);
    let mut stack = Vec::new();
    let mut members = Vec::with_capacity(min_area);
    const VISITING: u8 = 3;
    for start in 0..labels.len() {
        if labels[start] != UNSEEN {
            continue;
        }
        members.clear();
        let mut size = 0usize;
        labels[start] = VISITING;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            if members.len() < min_area {
                members.push(i);
            }
            let (x, y) = (i % w, i / w);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if (dx, dy) == (0, 0) || nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if labels[j] == UNSEEN {
                        labels[j] = VISITING;
                        stack.push(j);
                    }
                }
            }
        }
        let _ = size;
        if members.len() < min_area {
            for &i in &members {
                labels[i] = BG;
            }
        }
    }
    for l in labels.iter_mut() {
        if *l == VISITING {
            *l = FG_KEPT;
        }
    }
}

/// Hard labels → alpha mask with colour-based soft edges in the boundary band.
fn soften(
    image: &RgbImage,
    fit: &BorderFit,
    labels: &[u8],
    min_contrast: f32,
    tuning: Tuning,
) -> GrayImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let is_fg = |i: usize| labels[i] != BG;
    let mut alpha: Vec<u8> = labels
        .iter()
        .map(|&l| if l == BG { 0 } else { 255 })
        .collect();
    // Band: pixels within `band` px (Chebyshev) of a 4-neighbour label change.
    let band_r = tuning.band as usize;
    let mut band = vec![false; w * h];
    let mut band_list = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let f = is_fg(i);
            let edge = (x + 1 < w && is_fg(i + 1) != f) || (y + 1 < h && is_fg(i + w) != f);
            if !edge {
                continue;
            }
            for yy in y.saturating_sub(band_r)..=(y + band_r + 1).min(h - 1) {
                for xx in x.saturating_sub(band_r)..=(x + band_r + 1).min(w - 1) {
                    let j = yy * w + xx;
                    if !band[j] {
                        band[j] = true;
                        band_list.push(j);
                    }
                }
            }
        }
    }
    let src = image.as_raw();
    let px = |i: usize| {
        [
            f32::from(src[i * 3]),
            f32::from(src[i * 3 + 1]),
            f32::from(src[i * 3 + 2]),
        ]
    };
    let win = tuning.window as usize;
    for &i in &band_list {
        let (x, y) = (i % w, i / w);
        let (mut bs, mut bn, mut fs, mut fn_) = ([0f32; 3], 0f32, [0f32; 3], 0f32);
        for yy in y.saturating_sub(win)..=(y + win).min(h - 1) {
            for xx in x.saturating_sub(win)..=(x + win).min(w - 1) {
                let j = yy * w + xx;
                if band[j] {
                    continue;
                }
                let c = px(j);
                if is_fg(j) {
                    fs = [fs[0] + c[0], fs[1] + c[1], fs[2] + c[2]];
                    fn_ += 1.0;
                } else {
                    bs = [bs[0] + c[0], bs[1] + c[1], bs[2] + c[2]];
                    bn += 1.0;
                }
            }
        }
        if fn_ == 0.0 {
            continue; // thin structure: keep the hard decision
        }
        let f = [fs[0] / fn_, fs[1] / fn_, fs[2] / fn_];
        let b = if bn > 0.0 {
            [bs[0] / bn, bs[1] / bn, bs[2] / bn]
        } else {
            let e = fit.model.at_f64(x as u32, y as u32);
            [e[0] as f32, e[1] as f32, e[2] as f32]
        };
        let d = [f[0] - b[0], f[1] - b[1], f[2] - b[2]];
        let d2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        let contrast = d2.sqrt();
        if contrast < 2.0 * min_contrast {
            continue; // too little contrast to estimate a fraction: keep the hard decision
        }
        let c = px(i);
        let a = ((c[0] - b[0]) * d[0] + (c[1] - b[1]) * d[1] + (c[2] - b[2]) * d[2]) / d2;
        let dead = (1.5 * fit.noise_raw / contrast).min(0.3);
        let a = ((a - dead) / (1.0 - 2.0 * dead)).clamp(0.0, 1.0);
        alpha[i] = (a * 255.0).round() as u8;
    }
    GrayImage::from_raw(w as u32, h as u32, alpha).expect("w × h alpha values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve6_solves_a_known_system() {
        let mut a = [[0f64; 6]; 6];
        for (i, row) in a.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j {
                    4.0
                } else {
                    1.0 / (1.0 + (i + j) as f64)
                };
            }
        }
        let x_true = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0];
        let mut b = [0f64; 6];
        for i in 0..6 {
            b[i] = (0..6).map(|j| a[i][j] * x_true[j]).sum();
        }
        let x = solve6(a, b);
        for i in 0..6 {
            assert!((x[i] - x_true[i]).abs() < 1e-9);
        }
    }

    #[test]
    fn border_fit_recovers_a_linear_gradient() {
        let img = RgbImage::from_fn(200, 100, |x, y| {
            image::Rgb([(x / 2) as u8, (y * 2) as u8, 50])
        });
        let smooth = box3(&img);
        let fit = fit_border(&smooth, &img);
        let e = fit.model.at(100, 50);
        assert!((e[0] - 50.0).abs() < 1.5, "{e:?}");
        assert!((e[1] - 100.0).abs() < 1.5, "{e:?}");
        assert!((e[2] - 50.0).abs() < 0.5, "{e:?}");
    }

    #[test]
    fn tiny_images_stay_opaque() {
        let m = PlainBackground::default().mask(&RgbImage::new(2, 5));
        assert!(m.as_raw().iter().all(|&a| a == 255));
    }
}
