// generator.h: an explicit, seeded random generator. kdlab has no hidden global RNG:
// whatever draws random numbers takes a Generator&.
#pragma once
#include <cstdint>
#include <random>
#include <string>

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
  // Integer uniform in [lo, hi).
  int64_t randint(int64_t lo, int64_t hi);
  // Full state as text (for training checkpoints) and back.
  std::string state() const;
  void set_state(const std::string& state);

 private:
  std::mt19937_64 engine_;
  uint64_t seed_;
};

}  // namespace kd
