// teacher_cache.h: the teacher's logits computed once, over fixed augmented views of every
// training image, so that logits-only methods (KD, DKD, DGKD, WKD-L) skip the teacher's forward
// pass during training.
//
// The teacher's forward pass is the larger half of a distillation step (resnet56 costs about
// ten times resnet8). With random augmentation a per-image cache would be wrong: the student
// sees a different crop every epoch, and the teacher must see the same one. So, as FKD (Shen &
// Xing, ECCV 2022) does, the cache stores V augmented views per image, drawn once from a seeded
// generator, with the teacher's logits on each:
//
//     views[i, v] = (crop top, crop left, flip) of image i, v = 0..V-1      (N, V) parameters
//     logits[g, i, v] = guide g's logits on view v of image i                (G, N, V, K)
//
// During training the loader picks, for every image of every batch, one of its V views at
// random (from the epoch's generator, so runs stay deterministic), applies exactly those
// augmentation parameters, and the loss reads the stored logits of that view. Teacher and student
// therefore always see the same pixels; what changes is that each image has V possible crops
// instead of 162 (CIFAR's 9 x 9 offsets x 2 flips). docs/RESULTS.md measures both the time saved
// and the effect of that on accuracy.
//
// Guides: the teacher (g = 0) and, for DGKD, the assistants (g = 1, 2, ...).
//
// One file (safetensors) per guide, DIR/<model>-<fingerprint>.safetensors, holds "views" (N, V, 4)
// int64 [pad, top, left, flip] and "logits" (N, V, K) float32; for methods that also read the
// teacher's pooled feature (RKD, PKT, CC), the teacher's file also holds "pooled" (N, V, D) and its
// fingerprint says so (a separate file from the logits-only one). The fingerprint is a hash of
// everything they depend on (the guide's weight file and name, the training images and labels,
// the transform, V and the seed), so a cache is found again by every run with the same teacher
// and data, is never used for anything else, and is never overwritten by another; files are
// written atomically.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/loader.h"
#include "nn/models/model.h"

namespace kd::distill {

// A frozen network that guides the student: the teacher or a DGKD assistant.
struct Guide {
  std::string model;    // zoo name
  std::string weights;  // .safetensors path
  std::shared_ptr<nn::Classifier> net;  // in eval mode, weights loaded
  data::Modality input;  // what it sees of an image (cross-modal runs: the teacher's modality)
};

// Loads a guide's weights strictly into a fresh zoo model shaped for `like` (its modality's
// channels, its size) and `num_classes`; the guide sees like's modality. Puts it in eval mode.
// Errors name the file and the mismatch (also weights trained on another modality, which kdlab
// records in the file's metadata).
Guide load_guide(const std::string& model, const std::string& weights, int64_t num_classes, const data::Dataset& like);
// "resnet20:runs/a/model_best.safetensors" -> load_guide("resnet20", "runs/a/..."), and
// "resnet20:runs/e/model_best.safetensors:edges" a guide that sees the edges modality.
Guide load_guide_spec(const std::string& spec, int64_t num_classes, const data::Dataset& like);
// The transform `tc` (its augmentation) for what a guide sees: its modality and normalisation.
data::TransformConfig guide_transform(const data::TransformConfig& tc, const data::Dataset& train, const Guide& guide);

class TeacherCache {
 public:
  // Loads each guide's file from `dir` when it exists; otherwise computes its logits (a progress
  // bar; V forward passes over the training set) and saves them there. dir "": nothing saved.
  static TeacherCache build_or_load(const std::vector<Guide>& guides, const data::Dataset& train,
                                    const data::TransformConfig& transform, int64_t views, uint64_t seed,
                                    const std::string& dir, int64_t batch_size = 256, bool with_pooled = false);

  int64_t num_views() const { return views_.size(1); }
  int64_t num_guides() const { return logits_.size(0); }
  bool built_now() const { return built_now_; }
  double build_seconds() const { return build_seconds_; }

  // The stored view v of image i as augmentation parameters (view = v).
  data::AugParams view(int64_t index, int64_t v) const;
  // What the loader calls: one of image i's views, chosen uniformly with gen.
  data::AugParams choose(int64_t index, Generator& gen) const;
  // Guide g's logits (B, K) for a batch made with choose(): row b = logits[g, indices[b], aug[b].view].
  Tensor logits(int64_t guide, const data::Batch& batch) const;
  // The teacher's (guide 0's) pooled features (B, D) for the same batch; only in a cache built
  // with_pooled (for methods whose needs() are the logits and the pooled feature: RKD, PKT, CC).
  bool has_pooled() const { return pooled_.defined(); }
  Tensor pooled(const data::Batch& batch) const;

 private:
  Tensor views_;   // (N, V, 4) int64: pad, top, left, flip
  Tensor logits_;  // (G, N, V, K) float32
  Tensor pooled_;  // (N, V, D) float32, the teacher's; undefined unless built with_pooled
  bool built_now_ = false;
  double build_seconds_ = 0;
};

// The 64-bit FNV-1a hash of a file's bytes (guides' weights in the fingerprint).
uint64_t fnv1a_file(const std::string& path);

}  // namespace kd::distill
