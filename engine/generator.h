// generator.h: an explicit, seeded random generator. kdlab has no hidden global RNG:
// whatever draws random numbers takes a Generator&.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace kd {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : engine_(seed), seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t next_u64() { return engine_(); }
  // Uniform in [0, 1) with 24 random bits (exactly representable as float).
  float uniform() { return (float)(engine_() >> 40) * (1.0f / 16777216.0f); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform_double() { return (double)(engine_() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal by Box-Muller (deterministic across platforms, unlike std::normal_distribution).
  double normal();
  // Gamma(shape, 1) by Marsaglia and Tsang (shape < 1 via the boost Gamma(shape + 1) U^(1/shape)).
  // Dirichlet(alpha) = normalised Gamma(alpha_i) draws (federated partitions); Beta (mixup).
  double gamma(double shape);
  // Integer uniform in [lo, hi).
  int64_t randint(int64_t lo, int64_t hi);
  // Shuffles v in place, uniformly, by Fisher-Yates: for i from n-1 down to 1, swap v[i] with
  // v[randint(0, i + 1)]. Every shuffle in kdlab goes through here, so its draw order is fixed.
  void shuffle(std::vector<int64_t>& v);
  // Partial Fisher-Yates: afterwards the first n positions of v are a uniform draw of n elements
  // without replacement (in random order); the rest of v holds the others. For i in 0..n-1,
  // swap v[i] with v[randint(i, v.size())]. Needs 0 <= n <= v.size().
  void partial_shuffle(std::vector<int64_t>& v, int64_t n);
  // Full state as text (for training checkpoints) and back.
  std::string state() const;
  void set_state(const std::string& state);

 private:
  std::mt19937_64 engine_;
  uint64_t seed_;
};

}  // namespace kd
