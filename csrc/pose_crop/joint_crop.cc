// JointCrop: schema, documentation, registration and the CPU kernel (see joint_crop.h).
#include "pose_crop/joint_crop.h"

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace deeppose_fast {
namespace {

std::string Number(double v) {  // "14", "2.5", "nan": as the value was given, not std::to_string's "14.000000"
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

void ComputeJointCropGeometry(const float *pose, int K, int64_t H, int64_t W, const float *draws,
                              const float *scale, const CropParams &params, const CropOutputs &out) {
  const double s_x = scale[0], s_y = scale[1];
  CheckFrame(H, W, s_x, s_y);
  const double cx = draws[0], cy = draws[1], side = draws[2];
  const bool flipped = draws[3] > 0.5f;
  const double joint = draws[4];
  if (!(std::isfinite(cx) && std::isfinite(cy)))
    throw std::invalid_argument("centre must be finite, got (" + Number(cx) + ", " + Number(cy) + ")");
  if (!(side > 0.0 && std::isfinite(side)))
    throw std::invalid_argument("side must be finite and > 0, got " + Number(side));
  if (!(joint >= 0.0 && joint < K && joint == std::floor(joint)))
    throw std::invalid_argument("joint must be an integer in [0, " + std::to_string(K) + "), got " +
                                Number(joint));
  // the square about the centre, not clipped: the warp repeats the border beyond the image
  BoxGeometry(pose, K, H, W, s_x, s_y, cx - 0.5 * side, cx + 0.5 * side, cy - 0.5 * side, cy + 0.5 * side,
              flipped, 0.0, 1.0, static_cast<int>(joint), params, out);
}

}  // namespace deeppose_fast

DALI_REGISTER_OPERATOR(JointCrop, ::deeppose_fast::JointCrop, ::dali::CPU);

DALI_SCHEMA(JointCrop)
    .DocStr(R"(Crop geometry of one joint in a DeepPose cascade stage (deeppose-fast's native operator).

Per sample, from the joints, the JPEG's shape, five draws (centre x, centre y, side, flip, joint; source
frame) and (optionally) the scale of a region stored at reduced resolution, computes for the square crop
of the given side about the given centre (not clipped to the image) the src->dst affine matrix for
``warp_affine(inverse_map=False)`` (relative to the region corner), the region to decode (for
``decoders.image_slice`` with absolute ``anchor``/``shape``), the targets in [-0.5, 0.5] with the left/right
swap on flipped samples, the weights (1 only on the refined joint's label) and the crop box. The rule is
documented in ``deeppose_fast/codec.py``, whose NumPy ``joint_crop_geometry`` this operator reproduces.

Outputs: matrix (2, 3), anchor (2,) x y, shape (2,) w h, targets (K, 2), weights (K,),
crop_box (4,) x0 y0 w h (source frame); all float32.)")
    .NumInput(3, 4)
    .InputDox(0, "pose", "TensorList of float, (K, 4)",
              "x, y, annotated, visible per joint, JPEG frame, continuous pixels (centre of pixel i at i + 0.5).")
    .InputDox(1, "image_shape", "TensorList of int64 or int32, (H, W[, C])",
              "The decoded JPEG's shape, e.g. from ``peek_image_shape``.")
    .InputDox(2, "draws", "TensorList of float, (5,)",
              "centre_x, centre_y, side (source frame, side > 0), flip (0 or 1), joint (an integer in [0, K)).")
    .InputDox(3, "scale", "TensorList of float, (2,)",
              "Optional: s_x, s_y JPEG pixels per source pixel of a scaled region (default 1, 1); the "
              "geometry is computed in the source frame.")
    .NumOutput(6)
    .AddArg("size", "Output side S in pixels.", DALI_INT32)
    .AddOptionalArg("flip_perm", "Joint permutation applied to flipped samples (flipped = joints[perm]).",
                    std::vector<int>{})
    .AddOptionalArg("region_relative",
                    "The matrix takes pixels of the region to decode (True) or of the whole JPEG (False: "
                    "for warping a JPEG decoded whole).",
                    true);
