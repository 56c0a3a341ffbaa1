// common.h: what the feature family shares.
//
//  - Feature taps by name. A method names the maps it reads as in ../shared/METHODS.md ("the
//    feature-tap contract"): "f0".."fn" = ModelOutput::feats[i] (stage outputs after their final
//    ReLU), "pre1".."pren" = ModelOutput::preact_feats[i] (the same maps before that ReLU),
//    "pooled" = ModelOutput::pooled.
//  - ConvReg, the "convolutional regression" of mdistiller (mdistiller/distillers/_common.py),
//    which maps a student feature map onto the teacher's shape: FitNets' regressor and WKD-F's
//    projector. For a student map (Cs, Hs, Ws) and a teacher map (Ct, Ht, Wt):
//        Hs == 2 Ht   conv 3x3, stride 2, padding 1            (halves the size)
//        2 Hs == Ht   transposed conv 4x4, stride 2, padding 1  (doubles the size)
//        Hs >= Ht     "valid" conv with kernel (1 + Hs - Ht, 1 + Ws - Wt)  (1x1 when equal)
//        otherwise    not supported (mdistiller raises NotImplemented)
//    then BatchNorm2d(Ct) and, by default, ReLU. All convs have a bias, as in mdistiller.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "distill/distiller.h"
#include "distill/output/common.h"
#include "nn/layers.h"

namespace kd::distill {

// The tap `tap` of one network's output. `method` and `side` ("student" / "teacher") name the
// caller in errors, which list the taps the output has and the fix.
Tensor feature_tap(const nn::ModelOutput& out, const std::string& tap, const std::string& method,
                   const std::string& side);
// Rejects a tap name that is not of the forms above (called when a method reads its parameters).
void check_tap_name(const std::string& tap, const std::string& method);
// Rejects an empty list of taps, and each name that check_tap_name rejects (a list option of a
// method's table, read by parse_options, is checked with it).
void check_taps(const std::vector<std::string>& taps, const std::string& method);
// "f1,f2,f3" -> {"f1", "f2", "f3"} (spaces ignored), checked with check_taps.
std::vector<std::string> split_taps(const std::string& list, const std::string& method);
std::string join_taps(const std::vector<std::string>& taps);

// The shape (B, C, H, W) of a tap in a sample output (DistillerContext::student_sample /
// teacher_sample), for building helpers. Errors say that the method needs one forward pass of
// each network to size them.
Shape sample_tap_shape(const nn::ModelOutput& sample, const std::string& tap, const std::string& method,
                       const std::string& side);

class ConvReg : public nn::Layer {
 public:
  // s_shape, t_shape: (B, C, H, W) of the student's and the teacher's map (B is ignored).
  // Weights drawn from `gen` with PyTorch's default Conv2d / ConvTranspose2d initialisation.
  ConvReg(const Shape& s_shape, const Shape& t_shape, Generator& gen, bool use_relu = true,
          const std::string& method = "ConvReg");
  Tensor forward(const Tensor& x) override;  // (B, Cs, Hs, Ws) -> (B, Ct, Ht, Wt)
  std::string type_name() const override { return "ConvReg"; }
  // Which of the rules above was taken: "conv3x3/2", "convT4x4/2" or "conv1x1", "conv3x3", ...
  const std::string& kind() const { return kind_; }

  std::shared_ptr<nn::Layer> conv;  // registered as "conv" (Conv2d or ConvTranspose2d)
  std::shared_ptr<nn::BatchNorm> bn;  // registered as "bn"
  bool use_relu;

 private:
  std::string kind_;
};

}  // namespace kd::distill
