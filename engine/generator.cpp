#include "engine/generator.h"

#include <cmath>
#include <sstream>
#include <utility>

#include "engine/error.h"

namespace kd {

double Generator::normal() {
  // Box-Muller: two uniforms in (0, 1] and [0, 1) give one normal sample.
  double u1 = 1.0 - uniform_double();
  double u2 = uniform_double();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double Generator::gamma(double a) {
  KD_CHECK(a > 0 && std::isfinite(a), "Generator::gamma: the shape must be positive and finite (got {})", a);
  if (a < 1.0) return gamma(a + 1.0) * std::pow(uniform_double(), 1.0 / a);
  const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = normal();
    double v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    const double u = uniform_double();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

int64_t Generator::randint(int64_t lo, int64_t hi) {
  KD_CHECK(hi > lo, "randint: empty range [{}, {})", lo, hi);
  uint64_t span = (uint64_t)(hi - lo);
  // Rejection sampling removes the modulo bias.
  uint64_t limit = UINT64_MAX - UINT64_MAX % span;
  uint64_t r;
  do r = engine_(); while (r >= limit);
  return lo + (int64_t)(r % span);
}

void Generator::shuffle(std::vector<int64_t>& v) {
  for (int64_t i = (int64_t)v.size() - 1; i > 0; --i) std::swap(v[i], v[randint(0, i + 1)]);
}

void Generator::partial_shuffle(std::vector<int64_t>& v, int64_t n) {
  const int64_t size = (int64_t)v.size();
  KD_CHECK(n >= 0 && n <= size, "partial_shuffle: cannot draw {} of {} elements; use 0 <= n <= {}", n, size, size);
  for (int64_t i = 0; i < n; ++i) std::swap(v[i], v[randint(i, size)]);
}

std::string Generator::state() const {
  std::ostringstream os;
  os << seed_ << ' ' << engine_;
  return os.str();
}

void Generator::set_state(const std::string& state) {
  std::istringstream is(state);
  uint64_t seed = 0;
  std::mt19937_64 e;
  is >> seed >> e;
  KD_CHECK(!is.fail(), "Generator::set_state: the state string is corrupt (expected a seed and an mt19937_64 state)");
  seed_ = seed;
  engine_ = e;
}

}  // namespace kd
