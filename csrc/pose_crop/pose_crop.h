// PoseCrop: the crop geometry of DeepPose training and evaluation as a DALI CPU operator.
//
// Per sample, from the joints (K, 4) `x, y, annotated, visible` (JPEG frame, continuous pixels), the
// JPEG's shape (H, W[, C]) and seven random draws (ext_x, ext_y, shift_x, shift_y, flip, angle, scale),
// it computes in one step:
//   matrix   (2, 3) src->dst affine matrix for warp_affine(inverse_map=False), src relative to `anchor`
//            (or to the JPEG's corner with region_relative=False, to warp the whole decoded JPEG);
//   anchor   (2,)   x, y of the region to decode (integral values);
//   shape    (2,)   w, h of the region to decode (integral values);
//   targets  (K, 2) p_dst / S - 0.5 clipped to [-0.5, 0.5] (0 where the weight is 0), left/right
//            swapped on flipped samples;
//   weights  (K,)   1 for annotated joints inside the S x S output, else 0;
//   crop_box (4,)   x0, y0, w, h of the unrotated crop box, source frame.
// An optional fourth input, scale (2,) s_x, s_y, gives JPEG pixels per source pixel of a region stored
// scaled: the geometry is computed in the source frame (joints and image size divided by scale) and only
// the matrix and the region to decode are expressed in the JPEG's pixels. Without it, scale is 1 and the
// source frame is the JPEG frame.
// The rule is stated in deeppose_fast/codec.py, whose NumPy `crop_geometry` is the reference this
// code mirrors operation by operation (double precision, same order), so both agree to float rounding.
// This header also declares what the cascade's JointCrop operator (joint_crop.h) shares with PoseCrop:
// steps 5-7 for a given crop box (BoxGeometry, codec._box_geometry), the argument reading, the output
// shapes and the per-sample loop.
#ifndef DEEPPOSE_FAST_POSE_CROP_H_
#define DEEPPOSE_FAST_POSE_CROP_H_

#include <cstdint>
#include <vector>

#include "dali/pipeline/operator/operator.h"

namespace deeppose_fast {

constexpr int kNumDraws = 7;
constexpr double kMinAspect = 0.25;  // codec.MIN_ASPECT
constexpr double kMinSide = 1.0;     // codec.MIN_SIDE
constexpr int kRegionMargin = 1;     // codec.REGION_MARGIN
constexpr double kBorderEps = 1e-3;  // codec.BORDER_EPS

struct CropParams {
  int size = 227;               // S
  double shift = 0.1;           // largest shift, fraction of the crop size
  std::vector<int> flip_perm;   // flipped = joints[flip_perm]; empty = identity
  bool region_relative = true;  // matrix from the region's pixels (else from the whole JPEG's)
};

struct CropOutputs {
  float *matrix;    // 6
  float *anchor;    // 2
  float *shape;     // 2
  float *targets;   // 2K
  float *weights;   // K
  float *crop_box;  // 4
};

// One sample's geometry; pose is K x 4 row-major. Throws std::invalid_argument on bad input.
// scale: s_x, s_y JPEG pixels per source pixel (1, 1 for an unscaled JPEG).
void ComputeCropGeometry(const float *pose, int num_joints, int64_t height, int64_t width,
                         const float *draws, const float *scale, const CropParams &params,
                         const CropOutputs &out);

// The signature of a per-sample geometry (ComputeCropGeometry, ComputeJointCropGeometry).
using GeometryFn = void (*)(const float *pose, int num_joints, int64_t height, int64_t width,
                            const float *draws, const float *scale, const CropParams &params,
                            const CropOutputs &out);

// The checks of the JPEG's size and scale both geometries make; throws std::invalid_argument.
void CheckFrame(int64_t height, int64_t width, double s_x, double s_y);

// Steps 5-7 of codec.py for the crop box [x0, x1] x [y0, y1] (source frame), as codec._box_geometry:
// the matrix (then flip, rotation by `angle` degrees and `zoom` about the output's centre), the region to
// decode in the JPEG's pixels, targets and weights. weighted_joint: the only joint that may carry weight
// (before the flip's relabelling), or -1 for every joint.
void BoxGeometry(const float *pose, int num_joints, int64_t height, int64_t width, double s_x, double s_y,
                 double x0, double x1, double y0, double y1, bool flipped, double angle, double zoom,
                 int weighted_joint, const CropParams &params, const CropOutputs &out);

// Operator plumbing shared by PoseCrop and JointCrop; `op` names the operator in error messages.
// Reads size, flip_perm, region_relative (and shift when with_shift) and checks them.
CropParams ReadCropParams(const ::dali::OpSpec &spec, const char *op, bool with_shift);
// Inputs pose (K, 4) float, image shape (H, W[, C]) int, draws (num_draws,) float, optional scale (2,)
// float; outputs matrix (2, 3), anchor (2,), shape (2,), targets (K, 2), weights (K,), crop_box (4,).
void SetupGeometryOutputs(const char *op, int num_draws, const CropParams &params,
                          std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws);
// Runs `geometry` on every sample; a std::invalid_argument becomes a DALI error naming op and sample.
void RunGeometry(const char *op, GeometryFn geometry, const CropParams &params, ::dali::Workspace &ws);

// A DALI CPU operator computing one geometry per sample (PoseCrop, JointCrop). `Kind` names it and gives
// its geometry: kName (error messages), kNumDraws, kWithShift (reads the `shift` argument) and
// kCompute (a GeometryFn).
template <typename Kind>
class GeometryOperator : public ::dali::Operator<::dali::CPUBackend> {
 public:
  explicit GeometryOperator(const ::dali::OpSpec &spec)
      : ::dali::Operator<::dali::CPUBackend>(spec), params_(ReadCropParams(spec, Kind::kName, Kind::kWithShift)) {}
  GeometryOperator(const GeometryOperator &) = delete;
  GeometryOperator &operator=(const GeometryOperator &) = delete;
  ~GeometryOperator() override = default;

 protected:
  bool SetupImpl(std::vector<::dali::OutputDesc> &output_desc, const ::dali::Workspace &ws) override {
    SetupGeometryOutputs(Kind::kName, Kind::kNumDraws, params_, output_desc, ws);
    return true;
  }
  void RunImpl(::dali::Workspace &ws) override { RunGeometry(Kind::kName, Kind::kCompute, params_, ws); }

 private:
  CropParams params_;
};

struct PoseCropKind {
  static constexpr const char *kName = "PoseCrop";
  static constexpr int kNumDraws = ::deeppose_fast::kNumDraws;
  static constexpr bool kWithShift = true;
  static constexpr GeometryFn kCompute = ComputeCropGeometry;
};
using PoseCrop = GeometryOperator<PoseCropKind>;

}  // namespace deeppose_fast

#endif  // DEEPPOSE_FAST_POSE_CROP_H_
