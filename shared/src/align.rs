//! Five-point face alignment to the ArcFace 112x112 template.
//!
//! The transform is the least-squares similarity (rotation, uniform scale, translation) taking the
//! detected landmarks onto the template: Umeyama's estimate. In two dimensions the scaled rotations
//! are exactly the matrices `[[a, -b], [b, a]]`, so the optimum has a closed form and needs no SVD.
//! Coordinates follow OpenCV and scikit-image: pixel `(col, row)` sits at the point `(col, row)`,
//! which is how insightface aligns the crops its models were trained on.

/// Side of the aligned crop, in pixels.
pub const CROP_SIZE: usize = 112;

/// ArcFace's landmark template for a 112x112 crop: left eye, right eye, nose tip, left and right
/// mouth corner (left and right as seen in the image).
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A similarity transform `p -> [[a, -b], [b, a]] p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Scale times the cosine of the rotation.
    pub a: f64,
    /// Scale times the sine of the rotation.
    pub b: f64,
    /// Translation along x.
    pub tx: f64,
    /// Translation along y.
    pub ty: f64,
}

impl Similarity {
    /// Maps a point.
    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        [
            self.a * x - self.b * y + self.tx,
            self.b * x + self.a * y + self.ty,
        ]
    }

    /// The inverse transform, or `None` when the scale is zero.
    pub fn inverse(&self) -> Option<Similarity> {
        let det = self.a * self.a + self.b * self.b;
        if det <= f64::EPSILON {
            return None;
        }
        // The inverse of [[a,-b],[b,a]] is [[a,b],[-b,a]] / det, itself a scaled rotation.
        let (a, b) = (self.a / det, -self.b / det);
        Some(Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }

    /// The uniform scale factor.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }
}

/// The least-squares similarity taking `src[i]` onto `dst[i]` (Umeyama, without reflection).
/// `None` when fewer than two points are given or the source points all coincide.
pub fn estimate_similarity(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Similarity> {
    assert_eq!(src.len(), dst.len(), "point sets differ in length");
    let n = src.len() as f64;
    if src.len() < 2 {
        return None;
    }
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(sx, sy), p| {
            (sx + p[0] as f64, sy + p[1] as f64)
        });
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] as f64 - msx, s[1] as f64 - msy);
        let (dx, dy) = (d[0] as f64 - mdx, d[1] as f64 - mdy);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        norm += sx * sx + sy * sy;
    }
    if norm <= f64::EPSILON {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    Some(Similarity {
        a,
        b,
        tx: mdx - (a * msx - b * msy),
        ty: mdy - (b * msx + a * msy),
    })
}

/// Warps an interleaved 8-bit image (`channels` values per pixel) through `to_dst`, which maps
/// source coordinates to output coordinates, into an `out_w` x `out_h` image. Bilinear sampling;
/// samples outside the source count as 0, as OpenCV's `warpAffine` with a constant border does.
pub fn warp_bilinear(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    to_dst: &Similarity,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * channels, "image buffer size");
    let mut out = vec![0u8; out_w * out_h * channels];
    let Some(inv) = to_dst.inverse() else {
        return out;
    };
    let fetch = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= width as i64 || y >= height as i64 {
            0.0
        } else {
            src[(y as usize * width + x as usize) * channels + c] as f64
        }
    };
    for oy in 0..out_h {
        for ox in 0..out_w {
            let [sx, sy] = inv.apply([ox as f64, oy as f64]);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..channels {
                let top = fetch(x0, y0, c) * (1.0 - fx) + fetch(x0 + 1, y0, c) * fx;
                let bottom = fetch(x0, y0 + 1, c) * (1.0 - fx) + fetch(x0 + 1, y0 + 1, c) * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                out[(oy * out_w + ox) * channels + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Aligns the face with the given five landmarks (in [`ARCFACE_TEMPLATE`] order) from an RGB
/// image into a 112x112 RGB crop. `None` when the landmarks are degenerate (all the same point).
pub fn align_face(
    rgb: &[u8],
    width: usize,
    height: usize,
    landmarks: &[[f32; 2]; 5],
) -> Option<Vec<u8>> {
    let t = estimate_similarity(landmarks, &ARCFACE_TEMPLATE)?;
    Some(warp_bilinear(
        rgb, width, height, 3, &t, CROP_SIZE, CROP_SIZE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identity_when_points_are_the_template() {
        let t = estimate_similarity(&ARCFACE_TEMPLATE, &ARCFACE_TEMPLATE).unwrap();
        assert!(close(t.a, 1.0) && close(t.b, 0.0) && close(t.tx, 0.0) && close(t.ty, 0.0));
    }

    #[test]
    fn recovers_a_hand_built_transform_exactly() {
        // Scale 2, rotation 90 degrees (a = 0, b = 2), translation (10, -3):
        // (x, y) -> (-2y + 10, 2x - 3).
        let src = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 4.0]];
        let dst = [[10.0, -3.0], [10.0, -1.0], [8.0, -3.0], [2.0, 3.0]];
        let t = estimate_similarity(&src, &dst).unwrap();
        assert!(close(t.a, 0.0) && close(t.b, 2.0), "{t:?}");
        assert!(close(t.tx, 10.0) && close(t.ty, -3.0), "{t:?}");
        assert!(close(t.scale(), 2.0));
    }

    #[test]
    fn least_squares_on_inconsistent_points_by_hand() {
        // src (-1,0),(1,0); dst (-2,0),(2,1): means (0,0) and (0,0.5); centred dst (-2,-0.5),(2,0.5).
        // dot = 2 + 2 = 4, cross = (-1)(-0.5) - 0 + (1)(0.5) = 1, norm = 2: a = 2, b = 0.5,
        // t = (0, 0.5) - R (0,0) = (0, 0.5).
        let t =
            estimate_similarity(&[[-1.0, 0.0], [1.0, 0.0]], &[[-2.0, 0.0], [2.0, 1.0]]).unwrap();
        assert!(close(t.a, 2.0) && close(t.b, 0.5) && close(t.tx, 0.0) && close(t.ty, 0.5));
    }

    #[test]
    fn inverse_undoes_the_transform() {
        let t = Similarity {
            a: 0.8,
            b: -0.3,
            tx: 5.0,
            ty: 7.5,
        };
        let inv = t.inverse().unwrap();
        for p in [[0.0, 0.0], [12.5, -3.0], [100.0, 40.0]] {
            let q = inv.apply(t.apply(p));
            assert!(close(q[0], p[0]) && close(q[1], p[1]));
        }
    }

    #[test]
    fn degenerate_points_have_no_transform() {
        assert!(estimate_similarity(&[[3.0, 3.0]; 5], &ARCFACE_TEMPLATE).is_none());
        assert!(estimate_similarity(&[[3.0, 3.0]], &[[1.0, 1.0]]).is_none());
    }

    #[test]
    fn warp_by_a_whole_pixel_shift_moves_pixels() {
        // A 4x3 grey image with distinct values; shift right by 1 and down by 1.
        let src: Vec<u8> = (0..12).map(|v| v * 10).collect();
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: 1.0,
            ty: 1.0,
        };
        let out = warp_bilinear(&src, 4, 3, 1, &t, 4, 3);
        // out(x, y) = src(x-1, y-1), 0 where that falls outside.
        let expect = [0, 0, 0, 0, 0, 0, 10, 20, 0, 40, 50, 60];
        assert_eq!(out, expect);
    }

    #[test]
    fn warp_interpolates_half_pixels_and_fades_at_the_border() {
        // 2x1 image [100, 200]; shift left by half a pixel: out(0) = (100+200)/2 = 150,
        // out(1) samples x = 1.5: 200 * 0.5 + 0 (outside) * 0.5 = 100.
        let t = Similarity {
            a: 1.0,
            b: 0.0,
            tx: -0.5,
            ty: 0.0,
        };
        assert_eq!(warp_bilinear(&[100, 200], 2, 1, 1, &t, 2, 1), [150, 100]);
    }

    #[test]
    fn aligning_a_face_drawn_at_twice_the_template_size() {
        // Landmarks at twice the template coordinates: the crop is the image shrunk by 2, so a
        // horizontal ramp with value x/2 (clamped to 255) must read back as about x at crop x.
        let (w, h) = (224, 224);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let v = (x / 2) as u8;
                rgb[(y * w + x) * 3..][..3].copy_from_slice(&[v, v, v]);
            }
        }
        let lm = ARCFACE_TEMPLATE.map(|[x, y]| [2.0 * x, 2.0 * y]);
        let crop = align_face(&rgb, w, h, &lm).unwrap();
        assert_eq!(crop.len(), CROP_SIZE * CROP_SIZE * 3);
        for x in [0usize, 10, 56, 100, 111] {
            let v = crop[(50 * CROP_SIZE + x) * 3] as i32;
            assert!((v - x as i32).abs() <= 1, "x={x}: {v}");
        }
    }
}
