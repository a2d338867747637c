//! A PNG writer that filters and deflates bands of rows on every core (the approach of `pigz`
//! and `mtpng`): 8-bit grey, RGB or RGBA, non-interlaced.
//!
//! Each band of rows is filtered (per row, the filter of the five in PNG 1.2 §6.6 with the
//! smallest sum of absolute signed bytes: the "minimum sum of absolute differences" heuristic
//! libpng and PIL use) and deflated independently (zlib-rs) into a raw deflate stream that ends
//! on a byte boundary (a sync flush); the bands' streams concatenated form one valid zlib
//! stream, whose Adler-32 is combined from the bands' (`adler32_combine`). The cost is a few
//! hundred bytes per band (no back-references across band boundaries) for a near-linear
//! speed-up.
//!
//! [`Deflate::Rle`] (zlib's `Z_RLE`: matches at distance 1 only, then Huffman coding) is what
//! the server uses. Measured on the 12 MP benchmark cutouts (`scripts/bench-segmenter.sh`,
//! zlib 1.3 in Python on the same filtered rows): u2netp 1.08 MB in 84 ms single-threaded,
//! against 1.12 MB / 300 ms for level 6 with `Z_FILTERED` (what PIL, hence rembg, writes) and
//! 1.20 MB / 330 ms for level 6 with the default strategy; ISNet 4.89 MB / 167 ms against
//! 5.07 MB / 960 ms and 5.50 MB / 830 ms. On filtered photographic rows the long-distance
//! matches a full search finds are rare; the entropy coding does the work.
//!
//! Filtering looks only at the span of each row where it or the row above has a non-zero byte:
//! outside it every filter's output is 0 (all four predictors of zero neighbours are 0), so the
//! costs, the choice and the bytes are those of filtering the whole row, for a fraction of the
//! work on cutouts, whose transparent pixels are all zero. A band goes through one row at a
//! time: the row is made (for [`encode_rows`]: a cutout is composed inside the band that
//! filters it and never exists whole), filtered, summed and handed to the compressor while it
//! is in cache. Filtering a whole band before deflating it wrote and read back 12 MB per band
//! at 12 MP; row by row, the 12 MP u2netp benchmark cutout encodes 7–14 % faster, to the same
//! bytes (containers/segmenter/README.md, "Benchmark").
//!
//! Why not the `png` crate: it deflates in one thread, and its fast mode (`fdeflate`) gives
//! files ~1.1–1.8× those of `Z_RLE` on cutouts.

use rayon::prelude::*;
use zlib_rs::adler32::{adler32, adler32_combine};
use zlib_rs::{DeflateConfig, DeflateFlush, Method, Status, Strategy};

/// How the filtered rows are deflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deflate {
    /// Run-length matches only (`Z_RLE`): the smallest and fastest on cutouts (see above).
    Rle,
    /// zlib's default strategy at a level, 0 (stored) to 9 (slowest), for comparison.
    Level(u8),
}

/// Rows per band below which splitting further does not pay (the per-band overhead).
const MIN_BAND_ROWS: usize = 64;
/// IDAT chunk size (any size ≤ 2³¹ − 1 is valid; 1 MiB keeps the chunks' CRCs cheap to stream).
const IDAT_CHUNK: usize = 1 << 20;

/// Encodes `pixels` (row-major, 8 bits per sample, `channels` samples per pixel: 1 = grey,
/// 3 = RGB, 4 = RGBA; exactly `width × height × channels` bytes) as a PNG, deflated per
/// `deflate`, on the current rayon pool.
///
/// # Panics
/// If `channels` is not 1, 3 or 4, a side is 0, or `pixels` has the wrong length (callers pass
/// an `image` buffer, whose length is checked at construction).
pub fn encode(pixels: &[u8], width: u32, height: u32, channels: u8, deflate: Deflate) -> Vec<u8> {
    let stride = width as usize * usize::from(channels);
    assert_eq!(
        pixels.len(),
        stride * height as usize,
        "PNG writer: buffer size"
    );
    encode_bands::<fn(usize, &mut [u8])>(width, height, channels, deflate, Rows::Buffer(pixels))
}

/// As [`encode`], but the pixels are made on demand, one row at a time: `fill(y, row)` writes
/// row `y` (`width × channels` bytes) into `row`, which arrives zeroed (so `fill` may skip what
/// is 0, a cutout's transparent pixels). It is called from several threads at once, for
/// disjoint or (for the row above a band) repeated rows, and must give the same bytes for the
/// same row each time.
///
/// Besides the output, each thread holds a few rows, never the whole image.
///
/// # Panics
/// If `channels` is not 1, 3 or 4, or a side is 0.
pub fn encode_rows(
    width: u32,
    height: u32,
    channels: u8,
    deflate: Deflate,
    fill: impl Fn(usize, &mut [u8]) + Sync,
) -> Vec<u8> {
    encode_bands(width, height, channels, deflate, Rows::Made(fill))
}

/// Where the writer's rows come from.
enum Rows<'a, F> {
    /// The whole image, in memory.
    Buffer(&'a [u8]),
    /// Made row by row ([`encode_rows`]).
    Made(F),
}

/// The writer behind [`encode`] and [`encode_rows`].
fn encode_bands<F: Fn(usize, &mut [u8]) + Sync>(
    width: u32,
    height: u32,
    channels: u8,
    deflate: Deflate,
    source: Rows<'_, F>,
) -> Vec<u8> {
    let colour_type = match channels {
        1 => 0u8,
        3 => 2,
        4 => 6,
        _ => panic!("PNG writer: {channels} channels (1, 3 or 4 expected)"),
    };
    assert!(width > 0 && height > 0, "PNG writer: empty image");
    let bpp = usize::from(channels);
    let stride = width as usize * bpp;
    let rows = height as usize;

    // Two bands per thread, so a slow band (dense foreground) does not leave a core idle.
    let bands = (rayon::current_num_threads() * 2)
        .min(rows.div_ceil(MIN_BAND_ROWS))
        .max(1);
    let band_rows = rows.div_ceil(bands);
    let config = DeflateConfig {
        level: match deflate {
            Deflate::Rle => 6,
            Deflate::Level(l) => i32::from(l.min(9)),
        },
        method: Method::Deflated,
        window_bits: -15, // raw deflate: the zlib header and checksum are written here
        mem_level: 8,
        strategy: match deflate {
            Deflate::Rle => Strategy::Rle,
            Deflate::Level(_) => Strategy::Default,
        },
    };
    let parts: Vec<Band> = (0..rows.div_ceil(band_rows))
        .into_par_iter()
        .map(|b| {
            let first = b * band_rows;
            encode_band(
                &source,
                stride,
                bpp,
                first..(first + band_rows).min(rows),
                rows,
                config,
            )
        })
        .collect();

    let mut zlib = Vec::with_capacity(parts.iter().map(|p| p.deflated.len()).sum::<usize>() + 6);
    zlib.extend_from_slice(&zlib_header(config.level as u32));
    let mut adler = 1u32;
    for band in &parts {
        zlib.extend_from_slice(&band.deflated);
        adler = adler32_combine(adler, band.adler, band.filtered_len as u64);
    }
    zlib.extend_from_slice(&adler.to_be_bytes());

    let mut out = Vec::with_capacity(zlib.len() + 64 + 12 * zlib.len().div_ceil(IDAT_CHUNK));
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = [0u8; 13];
    ihdr[..4].copy_from_slice(&width.to_be_bytes());
    ihdr[4..8].copy_from_slice(&height.to_be_bytes());
    ihdr[8] = 8; // bit depth
    ihdr[9] = colour_type; // compression, filter method and interlace stay 0
    chunk(&mut out, b"IHDR", &ihdr);
    for data in zlib.chunks(IDAT_CHUNK) {
        chunk(&mut out, b"IDAT", data);
    }
    chunk(&mut out, b"IEND", &[]);
    out
}

/// One band's share of the zlib stream.
struct Band {
    /// Raw deflate blocks, ending on a byte boundary (or the final block, for the last band).
    deflated: Vec<u8>,
    /// Adler-32 of the band's filtered bytes.
    adler: u32,
    /// How many filtered bytes the band holds (rows × (stride + 1)).
    filtered_len: usize,
}

/// Filters and deflates the rows `band` of an image of `rows` rows, one row at a time: each
/// filtered row goes to the compressor while it is still in cache, where filtering the whole
/// band first wrote and read back the band's size (12 MB at 12 MP) twice more.
fn encode_band<F: Fn(usize, &mut [u8])>(
    source: &Rows<'_, F>,
    stride: usize,
    bpp: usize,
    band: std::ops::Range<usize>,
    rows: usize,
    config: DeflateConfig,
) -> Band {
    // Rows made on demand go to two buffers in turn: the current row and the one above it.
    let mut made = match source {
        Rows::Buffer(_) => [Vec::new(), Vec::new()],
        Rows::Made(_) => [vec![0u8; stride], vec![0u8; stride]],
    };
    let make = |y: usize, made: &mut [Vec<u8>; 2]| {
        if let Rows::Made(fill) = source {
            let row = &mut made[y % 2];
            row.fill(0);
            fill(y, row);
        }
    };
    let mut filter = RowFilter::new(stride, bpp);
    let mut z = zlib_rs::Deflate::new_with_config(config);
    let mut deflated = Vec::new();
    let mut adler = 1u32;
    let mut prev_extent = None;
    if band.start > 0 {
        make(band.start - 1, &mut made);
        prev_extent = nonzero_extent(row_of(source, &made, band.start - 1, stride));
    }
    for y in band.clone() {
        make(y, &mut made);
        let prev = (y > 0).then(|| row_of(source, &made, y - 1, stride));
        let (line, extent) = filter.filter(row_of(source, &made, y, stride), prev, prev_extent);
        prev_extent = extent;
        adler = adler32(adler, line);
        deflate_into(&mut z, &mut deflated, line, DeflateFlush::NoFlush);
    }
    // The last band closes the stream; the others end on a byte boundary (a sync flush) so the
    // next band's blocks can follow.
    let flush = if band.end == rows {
        DeflateFlush::Finish
    } else {
        DeflateFlush::SyncFlush
    };
    deflate_into(&mut z, &mut deflated, &[], flush);
    Band {
        deflated,
        adler,
        filtered_len: band.len() * (stride + 1),
    }
}

/// Row `y` of `source` (`stride` bytes): from the buffer, or the one of `made` it was made in.
fn row_of<'r, F>(
    source: &'r Rows<'_, F>,
    made: &'r [Vec<u8>; 2],
    y: usize,
    stride: usize,
) -> &'r [u8] {
    match source {
        Rows::Buffer(pixels) => &pixels[y * stride..(y + 1) * stride],
        Rows::Made(_) => &made[y % 2],
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// The zlib header (RFC 1950 §2.2): deflate, 32 KiB window, the level hint, FCHECK.
fn zlib_header(level: u32) -> [u8; 2] {
    let cmf = 0x78u8;
    let flevel: u8 = match level {
        0 | 1 => 0,
        2..=5 => 1,
        6 => 2,
        _ => 3,
    };
    let flg = flevel << 6;
    let check = (u16::from(cmf) * 256 + u16::from(flg)) % 31;
    [cmf, flg + if check == 0 { 0 } else { (31 - check) as u8 }]
}

/// Feeds `input` to the raw deflate stream `z` with `flush`, appending what it writes to `out`;
/// returns once zlib has taken all the input and, for a flush, written everything it holds
/// (zlib's contract: call again with more output space while it fills the space it was given).
fn deflate_into(
    z: &mut zlib_rs::Deflate,
    out: &mut Vec<u8>,
    mut input: &[u8],
    flush: DeflateFlush,
) {
    loop {
        out.reserve(zlib_rs::compress_bound(input.len()).max(1 << 16));
        let (in_before, out_before) = (z.total_in(), z.total_out());
        let spare = out.spare_capacity_mut();
        let room = spare.len();
        let status = z
            .compress_uninit(input, spare, flush)
            .expect("deflate with input or a flush, and output room, makes progress");
        let taken = (z.total_in() - in_before) as usize;
        let written = (z.total_out() - out_before) as usize;
        assert!(written <= room, "deflate wrote within its buffer");
        // SAFETY: zlib wrote `written` bytes contiguously from the start of the spare capacity
        // it was given (its `next_out` contract), within that capacity (checked above).
        unsafe { out.set_len(out.len() + written) };
        input = &input[taken..];
        let done = match flush {
            DeflateFlush::Finish => {
                assert_ne!(
                    status,
                    Status::BufError,
                    "deflate finishes with output room"
                );
                status == Status::StreamEnd
            }
            // Output room left over means the flush is complete; so does `BufError` on a
            // repeated flush (zlib had nothing left to write when the last call filled `out`).
            _ => {
                input.is_empty()
                    && (flush == DeflateFlush::NoFlush
                        || written < room
                        || status == Status::BufError)
            }
        };
        if done {
            return;
        }
    }
}

/// The row filter's reusable buffers: picks and applies each row's filter.
struct RowFilter {
    bpp: usize,
    /// A row of zeros: the row above the first row.
    zero: Vec<u8>,
    candidate: Vec<u8>,
    best: Vec<u8>,
    /// The filtered row being output: the filter-type byte, then `stride` bytes, zero outside
    /// `dirty`.
    line: Vec<u8>,
    /// The byte range of `line[1..]` the last row wrote, which the next row clears.
    dirty: std::ops::Range<usize>,
}

impl RowFilter {
    fn new(stride: usize, bpp: usize) -> Self {
        RowFilter {
            bpp,
            zero: vec![0u8; stride],
            candidate: vec![0u8; stride],
            best: vec![0u8; stride],
            line: vec![0u8; stride + 1],
            dirty: 0..0,
        }
    }

    /// Filters `row` (`stride` bytes) under `prev` (`None` for the first row of the image),
    /// whose [`nonzero_extent`] is `prev_extent`: per row, the filter of the five in PNG 1.2
    /// §6.6 with the smallest sum of absolute signed bytes. Returns the filtered line (the
    /// filter-type byte, then `stride` bytes) and `row`'s own extent.
    fn filter(
        &mut self,
        row: &[u8],
        prev: Option<&[u8]>,
        prev_extent: Option<(usize, usize)>,
    ) -> (&[u8], Option<(usize, usize)>) {
        let stride = row.len();
        let prev = prev.unwrap_or(&self.zero);
        let extent = nonzero_extent(row);
        let span = filter_span(extent, prev_extent, self.bpp, stride);
        self.line[1 + self.dirty.start..1 + self.dirty.end].fill(0);
        self.dirty = 0..0;
        let (Some((lo, hi)), Some(_)) = (span, extent) else {
            // A zero row (fully transparent in a cutout): None gives zeros and costs 0, which
            // no filter beats.
            self.line[0] = 0;
            return (&self.line, extent);
        };
        let span = hi - lo;
        let mut best_kind = 0u8;
        let mut best_cost = cost(&row[lo..hi]);
        self.best[..span].copy_from_slice(&row[lo..hi]);
        for kind in 1..=4u8 {
            apply_filter(kind, row, prev, self.bpp, lo, &mut self.candidate[..span]);
            let c = cost(&self.candidate[..span]);
            if c < best_cost {
                best_cost = c;
                best_kind = kind;
                std::mem::swap(&mut self.best, &mut self.candidate);
            }
        }
        self.line[0] = best_kind;
        self.line[1 + lo..1 + hi].copy_from_slice(&self.best[..span]);
        self.dirty = lo..hi;
        (&self.line, extent)
    }
}

/// The filtered rows of `pixels` (whole rows of `stride` bytes), each prefixed with its
/// filter-type byte, as the writer makes them. With `first_is_context`, the first row is only
/// the predecessor of the second (the row above a band) and is not output.
#[cfg(test)]
fn filter_rows(pixels: &[u8], stride: usize, bpp: usize, first_is_context: bool) -> Vec<u8> {
    let rows: Vec<&[u8]> = pixels.chunks_exact(stride).collect();
    let skip = usize::from(first_is_context);
    let mut filter = RowFilter::new(stride, bpp);
    let mut out = Vec::new();
    let mut prev_extent = if skip == 1 {
        nonzero_extent(rows[0])
    } else {
        None
    };
    for y in skip..rows.len() {
        let (line, extent) = filter.filter(rows[y], (y > 0).then(|| rows[y - 1]), prev_extent);
        out.extend_from_slice(line);
        prev_extent = extent;
    }
    out
}

/// The byte range `lo..hi` outside which every filter's output is 0 for a row whose non-zero
/// extent is `row` under a row whose extent is `prev` ([`nonzero_extent`]; rows of `stride`
/// bytes): byte `i`'s output reads `row[i]`, `prev[i]`, `row[i − bpp]` and `prev[i − bpp]`, so
/// it can be non-zero only from the first non-zero byte of either row to `bpp` past the last.
/// `None` when both rows are all zero.
fn filter_span(
    row: Option<(usize, usize)>,
    prev: Option<(usize, usize)>,
    bpp: usize,
    stride: usize,
) -> Option<(usize, usize)> {
    let (lo, last) = match (row, prev) {
        (None, None) => return None,
        (Some(e), None) | (None, Some(e)) => e,
        (Some((a, b)), Some((c, d))) => (a.min(c), b.max(d)),
    };
    Some((lo, (last + bpp + 1).min(stride)))
}

/// The first and last non-zero byte of `bytes`, or `None` when all are zero.
fn nonzero_extent(bytes: &[u8]) -> Option<(usize, usize)> {
    Some((first_nonzero(bytes)?, last_nonzero(bytes)?))
}

/// Bytes per block of the zero scans: OR-folded 64 at a time, which the compiler vectorises.
const SCAN: usize = 64;

fn nonzero(block: &[u8]) -> bool {
    block.iter().fold(0u8, |a, &b| a | b) != 0
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    let block = bytes.chunks(SCAN).position(nonzero)?;
    let at = block * SCAN;
    bytes[at..].iter().position(|&b| b != 0).map(|i| at + i)
}

fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let tail = bytes.len() % SCAN;
    if let Some(i) = bytes[bytes.len() - tail..].iter().rposition(|&b| b != 0) {
        return Some(bytes.len() - tail + i);
    }
    let whole = &bytes[..bytes.len() - tail];
    let block = whole.chunks_exact(SCAN).rposition(nonzero)?;
    let at = block * SCAN;
    whole[at..at + SCAN]
        .iter()
        .rposition(|&b| b != 0)
        .map(|i| at + i)
}

/// Sum of the bytes read as signed values, absolute (the minimum-sum heuristic).
fn cost(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .map(|&b| u64::from((b as i8).unsigned_abs()))
        .sum()
}

/// PNG filter `kind` (1 Sub, 2 Up, 3 Average, 4 Paeth) of `row[lo..lo + out.len()]` given the
/// row above; bytes left of the row's first pixel read 0 as their left neighbours (PNG 1.2
/// §6.6).
fn apply_filter(kind: u8, row: &[u8], prev: &[u8], bpp: usize, lo: usize, out: &mut [u8]) {
    let hi = lo + out.len();
    // The first pixel has no left neighbour: a = c = 0, so Sub is the byte itself, Average
    // subtracts half the byte above, and Paeth's predictor is the byte above.
    let head = bpp.clamp(lo, hi);
    for i in lo..head {
        out[i - lo] = match kind {
            1 => row[i],
            2 | 4 => row[i].wrapping_sub(prev[i]),
            3 => row[i].wrapping_sub(prev[i] >> 1),
            _ => unreachable!("filter types are 1..=4 here"),
        };
    }
    if head == hi {
        return;
    }
    // From here on head ≥ bpp: every byte has its left neighbours.
    let (out, row_i, left, up, up_left) = (
        &mut out[head - lo..],
        &row[head..hi],
        &row[head - bpp..hi - bpp],
        &prev[head..hi],
        &prev[head - bpp..hi - bpp],
    );
    match kind {
        1 => {
            for ((o, &r), &a) in out.iter_mut().zip(row_i).zip(left) {
                *o = r.wrapping_sub(a);
            }
        }
        2 => {
            for ((o, &r), &b) in out.iter_mut().zip(row_i).zip(up) {
                *o = r.wrapping_sub(b);
            }
        }
        3 => {
            for (((o, &r), &a), &b) in out.iter_mut().zip(row_i).zip(left).zip(up) {
                *o = r.wrapping_sub(((u16::from(a) + u16::from(b)) >> 1) as u8);
            }
        }
        4 => {
            for ((((o, &r), &a), &b), &c) in
                out.iter_mut().zip(row_i).zip(left).zip(up).zip(up_left)
            {
                *o = r.wrapping_sub(paeth(a, b, c));
            }
        }
        _ => unreachable!("filter types are 1..=4 here"),
    }
}

/// The Paeth predictor (PNG 1.2 §6.6).
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let p = ia + ib - ic;
    let (pa, pb, pc) = ((p - ia).abs(), (p - ib).abs(), (p - ic).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(width: u32, height: u32, channels: u8) -> Vec<u8> {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        (0..width as usize * height as usize * usize::from(channels))
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // A gradient plus noise, with runs of zeros, like a cutout.
                if (i / 997) % 3 == 0 {
                    0
                } else {
                    ((i % 251) as u64 + s % 9) as u8
                }
            })
            .collect()
    }

    /// The filtered rows as the whole-row minimum-sum heuristic gives them, byte by byte from
    /// PNG 1.2 §6.6 (neighbours outside the image read 0): what [`filter_rows`] must equal.
    fn reference_filtered(pixels: &[u8], stride: usize, bpp: usize) -> Vec<u8> {
        let rows = pixels.len() / stride;
        let at = |y: isize, x: isize| -> u8 {
            if y < 0 || x < 0 {
                0
            } else {
                pixels[y as usize * stride + x as usize]
            }
        };
        let mut out = Vec::new();
        for y in 0..rows as isize {
            let mut best: Option<(u64, u8, Vec<u8>)> = None;
            for kind in 0..=4u8 {
                let filtered: Vec<u8> = (0..stride as isize)
                    .map(|x| {
                        let (r, a, b, c) = (
                            at(y, x),
                            at(y, x - bpp as isize),
                            at(y - 1, x),
                            at(y - 1, x - bpp as isize),
                        );
                        let predictor = match kind {
                            0 => 0,
                            1 => a,
                            2 => b,
                            3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                            _ => paeth(a, b, c),
                        };
                        r.wrapping_sub(predictor)
                    })
                    .collect();
                let c = cost(&filtered);
                if best.as_ref().is_none_or(|(bc, _, _)| c < *bc) {
                    best = Some((c, kind, filtered));
                }
            }
            let (_, kind, filtered) = best.unwrap();
            out.push(kind);
            out.extend(filtered);
        }
        out
    }

    /// A cutout-like picture: zero (transparent) except a blob whose span moves from row to row,
    /// with zero rows above, between and below.
    fn sparse(width: usize, height: usize, bpp: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut px = vec![0u8; width * height * bpp];
        for y in 0..height {
            if y % 7 == 3 || y < 2 || y + 2 > height {
                continue;
            }
            let from = (next() as usize) % width;
            let len = 1 + (next() as usize) % (width - from);
            for x in from..from + len {
                for ch in 0..bpp {
                    px[(y * width + x) * bpp + ch] = (next() % 256) as u8;
                }
            }
        }
        px
    }

    #[test]
    fn span_filtering_chooses_and_writes_what_whole_row_filtering_does() {
        for (w, h, bpp, seed) in [
            (1, 9, 4, 1),
            (2, 5, 1, 2),
            (37, 40, 3, 3),
            (129, 60, 4, 4),
            (200, 33, 1, 5),
        ] {
            let px = sparse(w, h, bpp, seed);
            let stride = w * bpp;
            let want = reference_filtered(&px, stride, bpp);
            assert_eq!(filter_rows(&px, stride, bpp, false), want, "{w}x{h}x{bpp}");
            // A band starting mid-image, with the row above as context.
            let from = h / 2 - 1;
            let band = filter_rows(&px[from * stride..], stride, bpp, true);
            assert_eq!(
                band,
                want[(from + 1) * (stride + 1)..],
                "band of {w}x{h}x{bpp}"
            );
        }
    }

    #[test]
    fn a_band_reads_the_extent_of_its_context_row() {
        // Identical wide rows (Up filters them to zeros), but the band's first row is narrower
        // than the context row above it: its Up output is non-zero where only the row above is.
        let (w, h, bpp) = (60usize, 6usize, 4usize);
        let stride = w * bpp;
        let line: Vec<u8> = (0..stride)
            .map(|i| ((i * 37 + 11) % 251 + 1) as u8)
            .collect();
        let mut px = line.repeat(h);
        let from = 2;
        px[(from + 1) * stride..(from + 1) * stride + 10 * bpp].fill(0);
        px[(from + 2) * stride - 10 * bpp..(from + 2) * stride].fill(0);
        let want = reference_filtered(&px, stride, bpp);
        assert_eq!(filter_rows(&px, stride, bpp, false), want);
        let band = filter_rows(&px[from * stride..], stride, bpp, true);
        assert_eq!(band, want[(from + 1) * (stride + 1)..]);
    }

    #[test]
    fn generated_rows_encode_to_the_same_file_as_a_buffer() {
        let (w, h, ch) = (301u32, 517u32, 4u8);
        let px = sparse(w as usize, h as usize, 4, 9);
        let stride = w as usize * 4;
        let generated = encode_rows(w, h, ch, Deflate::Rle, |first, buf| {
            buf.copy_from_slice(&px[first * stride..first * stride + buf.len()]);
        });
        assert_eq!(generated, encode(&px, w, h, ch, Deflate::Rle));
    }

    #[test]
    fn zero_scans_find_the_ends() {
        for len in [1usize, 63, 64, 65, 130, 1000] {
            let mut v = vec![0u8; len];
            assert_eq!((first_nonzero(&v), last_nonzero(&v)), (None, None), "{len}");
            for (i, j) in [
                (0, 0),
                (len / 3, len - 1),
                (len - 1, len - 1),
                (len / 2, len / 2 + len / 4),
            ] {
                v.fill(0);
                v[i] = 1;
                v[j] = 7;
                assert_eq!(
                    (first_nonzero(&v), last_nonzero(&v)),
                    (Some(i), Some(j)),
                    "{len} {i} {j}"
                );
            }
        }
    }

    #[test]
    fn round_trips_through_an_independent_decoder() {
        for (w, h, ch) in [
            (1, 1, 4),
            (7, 3, 3),
            (333, 517, 4),
            (640, 300, 1),
            (64, 1000, 3),
        ] {
            let px = noisy(w, h, ch);
            for level in [Deflate::Rle, Deflate::Level(0), Deflate::Level(6)] {
                let png = encode(&px, w, h, ch, level);
                let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
                    .unwrap_or_else(|e| panic!("{w}x{h}x{ch} {level:?}: {e}"));
                assert_eq!((img.width(), img.height()), (w, h));
                assert_eq!(img.color().channel_count(), ch);
                assert_eq!(img.as_bytes(), &px[..], "{w}x{h}x{ch} {level:?}");
            }
        }
    }

    #[test]
    fn zlib_stream_is_valid_with_its_checksum() {
        // zlib-rs's inflate checks the Adler-32 that a PNG decoder may skip.
        let (w, h, ch) = (300u32, 700u32, 4u8);
        let px = noisy(w, h, ch);
        let png = encode(&px, w, h, ch, Deflate::Rle);
        let mut zlib = Vec::new();
        let mut at = 8;
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            if &png[at + 4..at + 8] == b"IDAT" {
                zlib.extend_from_slice(&png[at + 8..at + 8 + len]);
            }
            at += 12 + len;
        }
        let mut raw = vec![0u8; h as usize * (w as usize * 4 + 1)];
        let (out, code) =
            zlib_rs::decompress_slice(&mut raw, &zlib, zlib_rs::InflateConfig::default());
        assert_eq!(
            code,
            zlib_rs::ReturnCode::Ok,
            "valid zlib stream, checksum included"
        );
        assert_eq!(out.len(), h as usize * (w as usize * 4 + 1));
    }

    #[test]
    fn deflate_into_takes_all_input_and_completes_each_flush() {
        // Incompressible bytes, so each call's output outgrows the room first reserved.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let config = DeflateConfig {
            window_bits: -15,
            ..DeflateConfig::new(6)
        };
        let mut z = zlib_rs::Deflate::new_with_config(config);
        let mut out = Vec::new();
        deflate_into(&mut z, &mut out, &data[..200_000], DeflateFlush::NoFlush);
        deflate_into(&mut z, &mut out, &[], DeflateFlush::SyncFlush);
        // A repeated flush with nothing to write (zlib answers `BufError`) returns at once.
        deflate_into(&mut z, &mut out, &[], DeflateFlush::SyncFlush);
        deflate_into(&mut z, &mut out, &data[200_000..], DeflateFlush::NoFlush);
        deflate_into(&mut z, &mut out, &[], DeflateFlush::Finish);
        assert!(out.len() > 1 << 16, "more than one reservation's worth");
        let mut back = vec![0u8; data.len()];
        let (inflated, code) =
            zlib_rs::decompress_slice(&mut back, &out, zlib_rs::InflateConfig { window_bits: -15 });
        assert_eq!(code, zlib_rs::ReturnCode::Ok);
        assert_eq!(inflated, &data[..]);
    }

    #[test]
    fn adler_combine_matches_the_whole() {
        let data = noisy(1000, 37, 3);
        for cut in [0, 1, 5552, 65521, 70000, data.len()] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                adler32_combine(adler32(1, a), adler32(1, b), b.len() as u64),
                adler32(1, &data),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn zlib_header_checks() {
        for level in 0..=9 {
            let [cmf, flg] = zlib_header(level);
            assert_eq!((u16::from(cmf) * 256 + u16::from(flg)) % 31, 0);
        }
    }

    #[test]
    fn paeth_predictor_follows_the_spec() {
        assert_eq!(paeth(10, 20, 10), 20);
        assert_eq!(paeth(20, 10, 10), 20);
        assert_eq!(paeth(10, 10, 10), 10);
        assert_eq!(paeth(0, 255, 255), 0);
    }
}
