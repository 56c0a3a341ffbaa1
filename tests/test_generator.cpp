// The seeded generator's shuffles (engine/generator.h): Generator::shuffle and
// Generator::partial_shuffle are permutations, repeat for a seed, and draw in exactly the order of
// the loops they replaced (the loader's epoch order, the label-noise draw, random_subset, the
// validation split, ACD-U's mixup partners), so that every seeded result stays bit-identical.
#include <algorithm>
#include <numeric>

#include "test_util.h"

using namespace kd;

static std::vector<int64_t> iota_vector(int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// The loops the two methods replaced, written out as they were.
static std::vector<int64_t> old_full_shuffle(int64_t n, uint64_t seed) {
  std::vector<int64_t> order = iota_vector(n);
  Generator gen(seed);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[gen.randint(0, i + 1)]);
  return order;
}
static std::vector<int64_t> old_partial_shuffle(int64_t size, int64_t n, uint64_t seed) {
  std::vector<int64_t> order = iota_vector(size);
  Generator gen(seed);
  for (int64_t i = 0; i < n; ++i) std::swap(order[i], order[gen.randint(i, size)]);
  return order;
}

static bool is_permutation_of_iota(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v == iota_vector((int64_t)v.size());
}

TEST_CASE("generator: shuffle is a permutation, repeats for a seed and keeps the old draw order") {
  for (int64_t n : {0, 1, 2, 10, 257}) {
    CAPTURE(n);
    std::vector<int64_t> a = iota_vector(n), b = iota_vector(n);
    Generator g1(7), g2(7);
    g1.shuffle(a);
    g2.shuffle(b);
    CHECK(is_permutation_of_iota(a));
    CHECK(a == b);                          // determinism for a seed
    CHECK(a == old_full_shuffle(n, 7));     // the loop it replaced
    CHECK(g1.next_u64() == g2.next_u64());  // and the generator is left in the same state
  }
  // a golden order for seed 42 (the old loop's output, written down)
  std::vector<int64_t> v = iota_vector(10);
  Generator gen(42);
  gen.shuffle(v);
  CHECK(v == std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6});
  // a different seed gives a different order
  std::vector<int64_t> w = iota_vector(10);
  Generator other(43);
  other.shuffle(w);
  CHECK(w != v);
}

TEST_CASE("generator: partial_shuffle draws the first n without replacement, in the old order") {
  for (int64_t n : {0, 1, 5, 20}) {
    CAPTURE(n);
    std::vector<int64_t> a = iota_vector(20), b = iota_vector(20);
    Generator g1(3), g2(3);
    g1.partial_shuffle(a, n);
    g2.partial_shuffle(b, n);
    CHECK(is_permutation_of_iota(a));
    CHECK(a == b);
    CHECK(a == old_partial_shuffle(20, n, 3));
  }
  std::vector<int64_t> v = iota_vector(10);
  Generator gen(42);
  gen.partial_shuffle(v, 4);
  CHECK(v == std::vector<int64_t>{6, 0, 4, 7, 2, 5, 1, 3, 8, 9});

  Generator g(1);
  std::vector<int64_t> small = iota_vector(3);
  CHECK_THROWS_WITH_AS(g.partial_shuffle(small, 4), doctest::Contains("cannot draw 4 of 3"), Error);
  CHECK_THROWS_AS(g.partial_shuffle(small, -1), Error);
}
