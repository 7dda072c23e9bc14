// PoseCrop: schema, documentation, registration and the CPU kernel (see pose_crop.h).
#include "pose_crop/pose_crop.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#ifndef POSE_CROP_SOURCE_HASH
#error "POSE_CROP_SOURCE_HASH must be defined by the build (CMakeLists.txt hashes csrc/pose_crop)"
#endif

// The loader finds this tag in the library's bytes (without running it) and compares the hash with that
// of the sources beside the package, to detect a stale build.
extern "C" __attribute__((visibility("default"), used)) const char deeppose_fast_pose_crop_source_tag[] =
    "deeppose_fast.pose_crop.source_hash=" POSE_CROP_SOURCE_HASH;

namespace deeppose_fast {
namespace {

// codec._clip_span: clip [lo, hi] to [0, limit], keeping at least 1 px (limit >= 1).
void ClipSpan(double &lo, double &hi, double limit) {
  lo = std::min(std::max(lo, 0.0), limit);
  hi = std::min(std::max(hi, 0.0), limit);
  if (hi - lo < 1.0) {
    lo = std::min(lo, limit - 1.0);
    hi = lo + 1.0;
  }
}

}  // namespace

void CheckFrame(int64_t H, int64_t W, double s_x, double s_y) {
  if (H < 1 || W < 1)
    throw std::invalid_argument("image must be at least 1 x 1 px, got " + std::to_string(H) + " x " +
                                std::to_string(W));
  if (!(s_x > 0.0 && s_x <= static_cast<double>(W) && s_y > 0.0 && s_y <= static_cast<double>(H)))
    throw std::invalid_argument("scale must be in (0, W] x (0, H], got (" + std::to_string(s_x) + ", " +
                                std::to_string(s_y) + ")");
}

void ComputeCropGeometry(const float *pose, int K, int64_t H, int64_t W, const float *draws,
                         const float *scale, const CropParams &params, const CropOutputs &out) {
  const double s_x = scale[0], s_y = scale[1];
  CheckFrame(H, W, s_x, s_y);
  const double ext_x = draws[0], ext_y = draws[1], sh_x = draws[2], sh_y = draws[3];
  const bool flipped = draws[4] > 0.5f;
  const double angle = draws[5], zoom = draws[6];

  // 0. the source frame: the JPEG's joints and size divided by scale
  const double src_w = static_cast<double>(W) / s_x, src_h = static_cast<double>(H) / s_y;
  // 1. box around the annotated joints (the whole image when none is annotated)
  double bx0 = std::numeric_limits<double>::infinity(), by0 = bx0;
  double bx1 = -bx0, by1 = -bx0;
  bool any = false;
  for (int k = 0; k < K; k++) {
    if (!(pose[4 * k + 2] > 0.5f)) continue;
    any = true;
    const double x = pose[4 * k] / s_x, y = pose[4 * k + 1] / s_y;
    bx0 = std::min(bx0, x); bx1 = std::max(bx1, x);
    by0 = std::min(by0, y); by1 = std::max(by1, y);
  }
  if (!any) {
    bx0 = 0.0; bx1 = src_w;
    by0 = 0.0; by1 = src_h;
  }
  double cx = 0.5 * (bx0 + bx1), cy = 0.5 * (by0 + by1);
  const double bw0 = bx1 - bx0, bh0 = by1 - by0;
  const double bw = std::max({bw0, kMinAspect * bh0, kMinSide});
  const double bh = std::max({bh0, kMinAspect * bw0, kMinSide});
  // 2. extension, 3. shift bounded by the margin the extension left around the joints
  const double cw = bw * ext_x, ch = bh * ext_y;
  cx += sh_x * std::max(std::min(params.shift * cw, 0.5 * (cw - bw)), 0.0);
  cy += sh_y * std::max(std::min(params.shift * ch, 0.5 * (ch - bh)), 0.0);
  // 4. clip to the image
  double x0 = cx - 0.5 * cw, x1 = cx + 0.5 * cw, y0 = cy - 0.5 * ch, y1 = cy + 0.5 * ch;
  ClipSpan(x0, x1, src_w);
  ClipSpan(y0, y1, src_h);
  // 5.-7.: every joint may carry weight
  BoxGeometry(pose, K, H, W, s_x, s_y, x0, x1, y0, y1, flipped, angle, zoom, -1, params, out);
}

void BoxGeometry(const float *pose, int K, int64_t H, int64_t W, double s_x, double s_y, double x0,
                 double x1, double y0, double y1, bool flipped, double angle, double zoom, int weighted_joint,
                 const CropParams &params, const CropOutputs &out) {
  if (flipped && !params.flip_perm.empty() && static_cast<int>(params.flip_perm.size()) != K)
    throw std::invalid_argument("flip_perm has " + std::to_string(params.flip_perm.size()) +
                                " entries but the pose has " + std::to_string(K) + " joints");
  const double S = params.size;
  const double cw = x1 - x0, ch = y1 - y0;

  // 5. src->dst in the source frame: rotate/scale about the centre after scale-to-S and flip
  const double sx = S / cw, sy = S / ch;
  double a00 = sx, a02 = -x0 * sx;
  const double a11 = sy, a12 = -y0 * sy;
  if (flipped) {
    a00 = -a00;
    a02 = S - a02;
  }
  const double rad = angle * (M_PI / 180.0);  // as Python's math.radians
  const double c = std::cos(rad) * zoom, s = std::sin(rad) * zoom;
  const double h = 0.5 * S;
  const double m00 = c * a00, m01 = -s * a11, m02 = c * (a02 - h) - s * (a12 - h) + h;
  const double m10 = s * a00, m11 = c * a11, m12 = s * (a02 - h) + c * (a12 - h) + h;

  // 6. region to decode: the source footprint plus a margin for bilinear sampling, clipped
  double fx0, fx1, fy0, fy1;
  if (angle == 0.0 && zoom == 1.0) {
    fx0 = x0; fx1 = x1; fy0 = y0; fy1 = y1;
  } else {
    const double det = m00 * m11 - m01 * m10;
    fx0 = fy0 = std::numeric_limits<double>::infinity();
    fx1 = fy1 = -fx0;
    const double corners[4][2] = {{0.0, 0.0}, {S, 0.0}, {0.0, S}, {S, S}};
    for (const auto &uv : corners) {
      const double qx = uv[0] - m02, qy = uv[1] - m12;
      const double ux = (m11 * qx - m01 * qy) / det;
      const double uy = (m00 * qy - m10 * qx) / det;
      fx0 = std::min(fx0, ux); fx1 = std::max(fx1, ux);
      fy0 = std::min(fy0, uy); fy1 = std::max(fy1, uy);
    }
  }
  // ... in the JPEG's pixels, clipped to the JPEG in double before the conversion to integers (a
  // cascade's crop box is not clipped to the image and may lie anywhere)
  fx0 *= s_x; fx1 *= s_x; fy0 *= s_y; fy1 *= s_y;
  const double Wd = static_cast<double>(W), Hd = static_cast<double>(H);
  const double rx0 = std::min(std::max(std::floor(fx0) - kRegionMargin, 0.0), Wd - 1.0);
  const double ry0 = std::min(std::max(std::floor(fy0) - kRegionMargin, 0.0), Hd - 1.0);
  const double rx1 = std::max(std::min(std::ceil(fx1) + kRegionMargin, Wd), rx0 + 1.0);
  const double ry1 = std::max(std::min(std::ceil(fy1) + kRegionMargin, Hd), ry0 + 1.0);

  // the matrix from the JPEG region's pixels: M_source diag(1 / s_x, 1 / s_y), then the region offset
  // (none when the whole JPEG is decoded and warped)
  const double j00 = m00 / s_x, j01 = m01 / s_y, j10 = m10 / s_x, j11 = m11 / s_y;
  const double ox = params.region_relative ? rx0 : 0.0;
  const double oy = params.region_relative ? ry0 : 0.0;
  out.matrix[0] = static_cast<float>(j00);
  out.matrix[1] = static_cast<float>(j01);
  out.matrix[2] = static_cast<float>(j00 * ox + j01 * oy + m02);
  out.matrix[3] = static_cast<float>(j10);
  out.matrix[4] = static_cast<float>(j11);
  out.matrix[5] = static_cast<float>(j10 * ox + j11 * oy + m12);
  out.anchor[0] = static_cast<float>(rx0);
  out.anchor[1] = static_cast<float>(ry0);
  out.shape[0] = static_cast<float>(rx1 - rx0);
  out.shape[1] = static_cast<float>(ry1 - ry0);
  out.crop_box[0] = static_cast<float>(x0);
  out.crop_box[1] = static_cast<float>(y0);
  out.crop_box[2] = static_cast<float>(cw);
  out.crop_box[3] = static_cast<float>(ch);

  // 7. targets and weights, with the left/right label swap on flipped samples
  for (int k = 0; k < K; k++) {
    const int src = (flipped && !params.flip_perm.empty()) ? params.flip_perm[k] : k;
    const double px = pose[4 * src] / s_x, py = pose[4 * src + 1] / s_y;
    const double dx = m00 * px + m01 * py + m02;
    const double dy = m10 * px + m11 * py + m12;
    const bool inside = pose[4 * src + 2] > 0.5f && dx >= -kBorderEps && dx <= S + kBorderEps &&
                        dy >= -kBorderEps && dy <= S + kBorderEps;
    // clipped: a joint up to kBorderEps outside still yields a target inside [-0.5, 0.5]
    out.targets[2 * k] = inside ? static_cast<float>(std::clamp(dx / S - 0.5, -0.5, 0.5)) : 0.0f;
    out.targets[2 * k + 1] = inside ? static_cast<float>(std::clamp(dy / S - 0.5, -0.5, 0.5)) : 0.0f;
    out.weights[k] = inside && (weighted_joint < 0 || src == weighted_joint) ? 1.0f : 0.0f;
  }
}

CropParams ReadCropParams(const ::dali::OpSpec &spec, const char *op, bool with_shift) {
  CropParams params;
  params.size = spec.GetArgument<int>("size");
  if (with_shift) params.shift = spec.GetArgument<float>("shift");
  params.flip_perm = spec.GetRepeatedArgument<int>("flip_perm");
  params.region_relative = spec.GetArgument<bool>("region_relative");
  DALI_ENFORCE(params.size >= 1, ::dali::make_string(op, ": size must be >= 1, got ", params.size));
  DALI_ENFORCE(params.shift >= 0.0, ::dali::make_string(op, ": shift must be >= 0, got ", params.shift));
  const int n = static_cast<int>(params.flip_perm.size());
  std::vector<int> seen(n, 0);
  for (int v : params.flip_perm) {
    DALI_ENFORCE(v >= 0 && v < n && !seen[v]++,
                 ::dali::make_string(op, ": flip_perm must be a permutation of 0..K-1"));
  }
  return params;
}

void SetupGeometryOutputs(const char *op, int num_draws, const CropParams &params,
                          std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws) {
  const auto &pose = ws.Input<::dali::CPUBackend>(0);
  const auto &shape = ws.Input<::dali::CPUBackend>(1);
  const auto &draws = ws.Input<::dali::CPUBackend>(2);
  DALI_ENFORCE(pose.type() == DALI_FLOAT,
               ::dali::make_string(op, ": pose (input 0) must be float32, got ", pose.type()));
  DALI_ENFORCE(draws.type() == DALI_FLOAT,
               ::dali::make_string(op, ": draws (input 2) must be float32, got ", draws.type()));
  DALI_ENFORCE(shape.type() == DALI_INT64 || shape.type() == DALI_INT32,
               ::dali::make_string(op, ": image shape (input 1) must be int32 or int64, got ", shape.type()));
  const bool scaled = ws.NumInput() > 3;
  if (scaled)
    DALI_ENFORCE(ws.Input<::dali::CPUBackend>(3).type() == DALI_FLOAT,
                 ::dali::make_string(op, ": scale (input 3) must be float32, got ",
                                     ws.Input<::dali::CPUBackend>(3).type()));
  const int n = pose.num_samples();
  ::dali::TensorListShape<> k2(n, 2), k1(n, 1);
  for (int i = 0; i < n; i++) {
    auto ps = pose.tensor_shape(i);
    DALI_ENFORCE(ps.size() == 2 && ps[1] == 4,
                 ::dali::make_string(op, ": sample ", i, ": pose must have shape (K, 4), got ", ps));
    auto ss = shape.tensor_shape(i);
    DALI_ENFORCE(ss.size() == 1 && ss[0] >= 2,
                 ::dali::make_string(op, ": sample ", i, ": image shape must be (H, W[, C]), got ", ss));
    auto ds = draws.tensor_shape(i);
    DALI_ENFORCE(ds.size() == 1 && ds[0] == num_draws,
                 ::dali::make_string(op, ": sample ", i, ": draws must have shape (", num_draws, ",), got ", ds));
    if (scaled) {
      auto cs = ws.Input<::dali::CPUBackend>(3).tensor_shape(i);
      DALI_ENFORCE(cs.size() == 1 && cs[0] == 2,
                   ::dali::make_string(op, ": sample ", i, ": scale must have shape (2,), got ", cs));
    }
    if (!params.flip_perm.empty())
      DALI_ENFORCE(static_cast<int64_t>(params.flip_perm.size()) == ps[0],
                   ::dali::make_string(op, ": sample ", i, ": flip_perm has ", params.flip_perm.size(),
                                       " entries but the pose has ", ps[0], " joints"));
    k2.set_tensor_shape(i, ::dali::TensorShape<>(ps[0], 2));
    k1.set_tensor_shape(i, ::dali::TensorShape<>(ps[0]));
  }
  output_desc.resize(6);
  output_desc[0] = {::dali::uniform_list_shape(n, {2, 3}), DALI_FLOAT};
  output_desc[1] = {::dali::uniform_list_shape(n, {2}), DALI_FLOAT};
  output_desc[2] = {::dali::uniform_list_shape(n, {2}), DALI_FLOAT};
  output_desc[3] = {k2, DALI_FLOAT};
  output_desc[4] = {k1, DALI_FLOAT};
  output_desc[5] = {::dali::uniform_list_shape(n, {4}), DALI_FLOAT};
}

void RunGeometry(const char *op, GeometryFn geometry, const CropParams &params, ::dali::Workspace &ws) {
  const auto &pose = ws.Input<::dali::CPUBackend>(0);
  const auto &shape = ws.Input<::dali::CPUBackend>(1);
  const auto &draws = ws.Input<::dali::CPUBackend>(2);
  const bool shape64 = shape.type() == DALI_INT64;
  const bool scaled = ws.NumInput() > 3;
  const float unscaled[2] = {1.0f, 1.0f};
  // A few hundred flops per sample: a plain loop is cheaper than the thread pool's hand-off.
  for (int i = 0; i < pose.num_samples(); i++) {
    const int64_t H = shape64 ? shape.tensor<int64_t>(i)[0] : shape.tensor<int32_t>(i)[0];
    const int64_t W = shape64 ? shape.tensor<int64_t>(i)[1] : shape.tensor<int32_t>(i)[1];
    CropOutputs out{ws.Output<::dali::CPUBackend>(0).mutable_tensor<float>(i),
                    ws.Output<::dali::CPUBackend>(1).mutable_tensor<float>(i),
                    ws.Output<::dali::CPUBackend>(2).mutable_tensor<float>(i),
                    ws.Output<::dali::CPUBackend>(3).mutable_tensor<float>(i),
                    ws.Output<::dali::CPUBackend>(4).mutable_tensor<float>(i),
                    ws.Output<::dali::CPUBackend>(5).mutable_tensor<float>(i)};
    try {
      geometry(pose.tensor<float>(i), static_cast<int>(pose.tensor_shape(i)[0]), H, W, draws.tensor<float>(i),
               scaled ? ws.Input<::dali::CPUBackend>(3).tensor<float>(i) : unscaled, params, out);
    } catch (const std::invalid_argument &e) {
      DALI_FAIL(::dali::make_string(op, ": sample ", i, ": ", e.what()));
    }
  }
}

}  // namespace deeppose_fast

DALI_REGISTER_OPERATOR(PoseCrop, ::deeppose_fast::PoseCrop, ::dali::CPU);

DALI_SCHEMA(PoseCrop)
    .DocStr(R"(Crop geometry of DeepPose training and evaluation (deeppose-fast's native operator).

Per sample, from the joints, the JPEG's shape, seven random draws and (optionally) the scale of a
region stored at reduced resolution, computes the src->dst affine
matrix for ``warp_affine(inverse_map=False)`` (relative to the region corner), the region to decode
(for ``decoders.image_slice`` with absolute ``anchor``/``shape``), the targets in [-0.5, 0.5] with the
left/right swap on flipped samples, the per-joint weights and the crop box. The rule is documented in
``deeppose_fast/codec.py``, whose NumPy ``crop_geometry`` this operator reproduces.

Outputs: matrix (2, 3), anchor (2,) x y, shape (2,) w h, targets (K, 2), weights (K,),
crop_box (4,) x0 y0 w h (source frame); all float32.)")
    .NumInput(3, 4)
    .InputDox(0, "pose", "TensorList of float, (K, 4)",
              "x, y, annotated, visible per joint, JPEG frame, continuous pixels (centre of pixel i at i + 0.5).")
    .InputDox(1, "image_shape", "TensorList of int64 or int32, (H, W[, C])",
              "The decoded JPEG's shape, e.g. from ``peek_image_shape``.")
    .InputDox(2, "draws", "TensorList of float, (7,)",
              "ext_x, ext_y, shift_x, shift_y (in [-1, 1]), flip (0 or 1), angle (degrees), zoom.")
    .InputDox(3, "scale", "TensorList of float, (2,)",
              "Optional: s_x, s_y JPEG pixels per source pixel of a scaled region (default 1, 1); the "
              "geometry is computed in the source frame.")
    .NumOutput(6)
    .AddArg("size", "Output side S in pixels.", DALI_INT32)
    .AddOptionalArg("shift", "Largest shift of the crop centre, as a fraction of the crop size.", 0.1f)
    .AddOptionalArg("flip_perm", "Joint permutation applied to flipped samples (flipped = joints[perm]).",
                    std::vector<int>{})
    .AddOptionalArg("region_relative",
                    "The matrix takes pixels of the region to decode (True) or of the whole JPEG (False: "
                    "for warping a JPEG decoded whole).",
                    true);
