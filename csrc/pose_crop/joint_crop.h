// JointCrop: the crop of one joint in a stage s >= 2 of the DeepPose cascade (Toshev & Szegedy 2014,
// section 3.2), as a DALI CPU operator.
//
// Per sample, from the joints (K, 4) `x, y, annotated, visible` (JPEG frame, continuous pixels), the
// JPEG's shape (H, W[, C]) and five draws (centre_x, centre_y, side, flip, joint) in the source frame, it
// computes for the square of side `side` centred on (centre_x, centre_y), not clipped to the image:
//   matrix   (2, 3) src->dst affine matrix for warp_affine(inverse_map=False), src relative to `anchor`
//            (or to the JPEG's corner with region_relative=False), flipped x -> S - x when flip > 0.5;
//   anchor   (2,)   x, y of the region to decode (integral values; the footprint clipped to the JPEG);
//   shape    (2,)   w, h of the region to decode (integral values, at least 1);
//   targets  (K, 2) p_dst / S - 0.5 clipped to [-0.5, 0.5] of the annotated joints inside the output
//            (else 0), left/right swapped on flipped samples;
//   weights  (K,)   1 only for joint `joint` (when annotated and inside the output), on the label it
//            takes after the swap; 0 for every other joint;
//   crop_box (4,)   x0, y0, side, side, source frame.
// The optional fourth input scale (2,) is PoseCrop's: the geometry is in the source frame, the matrix and
// the region in the JPEG's pixels. The rule is stated in deeppose_fast/codec.py, whose NumPy
// `joint_crop_geometry` this code mirrors operation by operation (double precision, same order); steps
// 5-7 are PoseCrop's own code (BoxGeometry in pose_crop.h).
#ifndef DEEPPOSE_FAST_JOINT_CROP_H_
#define DEEPPOSE_FAST_JOINT_CROP_H_

#include <cstdint>
#include <vector>

#include "dali/pipeline/operator/operator.h"
#include "pose_crop/pose_crop.h"

namespace deeppose_fast {

constexpr int kNumJointDraws = 5;  // codec.JOINT_DRAW_FIELDS

// One sample's geometry (a GeometryFn; params.shift is unused). Throws std::invalid_argument on a
// non-finite centre, a side that is not finite and > 0, or a joint that is not an integer in [0, K).
void ComputeJointCropGeometry(const float *pose, int num_joints, int64_t height, int64_t width,
                              const float *draws, const float *scale, const CropParams &params,
                              const CropOutputs &out);

struct JointCropKind {
  static constexpr const char *kName = "JointCrop";
  static constexpr int kNumDraws = kNumJointDraws;
  static constexpr bool kWithShift = false;
  static constexpr GeometryFn kCompute = ComputeJointCropGeometry;
};
using JointCrop = GeometryOperator<JointCropKind>;

}  // namespace deeppose_fast

#endif  // DEEPPOSE_FAST_JOINT_CROP_H_
