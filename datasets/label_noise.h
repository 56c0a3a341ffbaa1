// label_noise.h: synthetic label noise for noisy-label experiments (ACD-U, DivideMix, Co-teaching).
//
// A spec names the kind of noise and its rate R in [0, 1]:
//
//   "sym:R"   symmetric noise. floor(R * N) samples, chosen uniformly at random without
//             replacement, get a label drawn uniformly from ALL K classes -- the draw may equal
//             the true label, so the fraction of labels that actually change is about
//             R * (K - 1) / K (0.45 for "sym:0.5" on CIFAR-10). This is the convention of
//             DivideMix's and ACD-U's official dataloader_cifar.py (`random.randint(0, 9)` for the
//             first int(r * 50000) indices of a shuffled list), which the published tables use.
//   "asym:R"  asymmetric (class-dependent) noise. floor(R * N) samples chosen the same way get
//             the label T(y):
//               K = 10   the CIFAR-10 map of DivideMix / ACD-U / Co-teaching: truck -> automobile
//                        (9 -> 1), bird -> airplane (2 -> 0), deer -> horse (4 -> 7),
//                        cat <-> dog (3 <-> 5); every other class maps to itself, so only the
//                        chosen samples of those five classes change (about R / 2 of all labels)
//               K = 100  the next class inside its block of five consecutive class indices,
//                        cyclically (0 -> 1 -> 2 -> 3 -> 4 -> 0, 5 -> 6 -> ... -> 9 -> 5, ...):
//                        Co-teaching's noisify_cifar100_asymmetric (build_for_cifar100), which
//                        calls the 20 blocks "superclasses"; in CIFAR-100's alphabetical fine-label
//                        order they are blocks of indices, not the official 20 coarse classes
//               other K  i -> (i + 1) % K
//             Choosing exactly floor(R * N) samples is the DivideMix / ACD-U convention; Co-teaching
//             flips each sample independently with probability R (the same rate in expectation).
//   "" or "none"  no noise (a copy of the labels).
//
// Determinism: one Generator(seed) draws the shuffled order (Fisher-Yates), then, in sample
// order, one new label per chosen sample (symmetric only). The same labels, K, spec and seed
// give the same noisy labels on every platform.
#pragma once
#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace kd::data {

struct LabelNoiseSpec {
  std::string kind;  // "none", "sym" or "asym"
  double rate = 0;   // R in [0, 1]
};

// Parses a spec; errors name the spec and show the accepted forms ("sym:0.5", "asym:0.4").
LabelNoiseSpec parse_label_noise(const std::string& spec);

// The asymmetric map T(y) described above, for a K-class problem.
int64_t asymmetric_noise_target(int64_t label, int64_t num_classes);

// labels (N) int64 in [0, K) -> noisy labels (N) int64 (a new tensor; `labels` is not changed).
Tensor inject_label_noise(const Tensor& labels, int64_t num_classes, const std::string& spec, uint64_t seed);

// The fraction of samples whose noisy label differs from the clean one; both (N) int64.
double label_noise_rate(const Tensor& clean, const Tensor& noisy);

}  // namespace kd::data
