// The autograd engine itself (engine/autograd.cpp): accumulation, grad mode, graph lifetime,
// error messages, the graph printer, and deep graphs.
#include "test_util.h"

using namespace kd;

static std::vector<float> vals(const Tensor& t) { return to_float_vector(t); }

TEST_CASE("autograd: gradients accumulate across backward() calls until zero_grad") {
  Tensor x = from_vector(std::vector<float>{1, 2, 3}, {3}).requires_grad_();
  sum(mul(x, x)).backward();  // d/dx sum(x^2) = 2x
  CHECK(vals(x.grad()) == std::vector<float>{2, 4, 6});
  sum(mul(x, 3.0)).backward();  // + 3
  CHECK(vals(x.grad()) == std::vector<float>{5, 7, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  CHECK(vals(x.grad()) == std::vector<float>{1, 1, 1});
}

TEST_CASE("autograd: the accumulated gradient owns its memory") {
  // sum's backward returns an expanded (stride-0) view; the leaf must get a real tensor
  Tensor x = zeros({2, 3}).requires_grad_();
  sum(x).backward();
  CHECK(x.grad().is_contiguous());
  sum(x).backward();
  CHECK(vals(x.grad()) == std::vector<float>(6, 2.f));
}

TEST_CASE("autograd: detach stops gradients") {
  Tensor x = from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(d.raw_data() == x.raw_data());  // same storage
  // y = x * detach(x): only the first factor is differentiated, d/dx = detach(x)
  sum(mul(x, mul(x, 1.0).detach())).backward();
  CHECK(vals(x.grad()) == std::vector<float>{1, 2});
}

TEST_CASE("autograd: NoGradGuard records nothing and restores the mode") {
  Tensor x = ones({2}).requires_grad_();
  CHECK(grad_enabled());
  {
    NoGradGuard outer;
    CHECK_FALSE(grad_enabled());
    Tensor y = mul(x, 2.0);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
    {
      NoGradGuard inner;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());  // the inner guard restores "off", not "on"
    set_grad_enabled(true);       // the outer guard still restores what it found
  }
  CHECK(grad_enabled());
  {
    set_grad_enabled(false);
    {
      NoGradGuard g;
    }
    CHECK_FALSE(grad_enabled());
    set_grad_enabled(true);
  }
  Tensor z = mul(x, 2.0);
  CHECK(z.requires_grad());
  CHECK(z.grad_fn() != nullptr);
  CHECK(z.grad_fn()->op == "mul_scalar");
}

TEST_CASE("autograd: retain_graph allows a second backward, otherwise it is an error") {
  Tensor x = from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  Tensor loss = sum(exp(x));
  loss.backward(Tensor(), /*retain_graph=*/true);
  std::vector<float> once = vals(x.grad());
  loss.backward();  // allowed: the first call kept the graph
  std::vector<float> twice = vals(x.grad());
  for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[i]));
  // the graph is now freed
  CHECK_THROWS_WITH_SUBSTR(loss.backward(), "second time");
  CHECK(graph_string(loss).find("[freed]") != std::string::npos);

  Tensor y = sum(mul(x, x));
  y.backward();
  CHECK_THROWS_WITH_SUBSTR(y.backward(), "second time");
  CHECK_THROWS_WITH_SUBSTR(y.backward(), "retain_graph");
}

TEST_CASE("autograd: backward errors") {
  Tensor x = ones({2, 3}).requires_grad_();
  Tensor y = mul(x, 2.0);
  CHECK_THROWS_WITH_SUBSTR(y.backward(), "needs a scalar");
  CHECK_THROWS_WITH_SUBSTR(y.backward(), "(2, 3)");
  CHECK_THROWS_WITH_SUBSTR(y.backward(ones({3})), "gradient of shape (3,) for a tensor of shape (2, 3)");
  Tensor c = ones({2});
  CHECK_THROWS_WITH_SUBSTR(sum(c).backward(), "does not require grad");
  {
    NoGradGuard ng;
    Tensor s = sum(x);
    CHECK_THROWS_WITH_SUBSTR(s.backward(), "does not require grad");
  }
  // requires_grad_ is only for leaves
  CHECK_THROWS_WITH_SUBSTR(y.requires_grad_(false), "leaf");
  CHECK_THROWS_WITH_SUBSTR(ones({2}, DType::i64).requires_grad_(), "float32");
  // with a gradient, a non-scalar is fine
  y.backward(full({2, 3}, 0.5));
  CHECK(vals(x.grad()) == std::vector<float>(6, 1.f));
}

TEST_CASE("autograd: a tensor used twice gets the sum of both gradients") {
  // diamond: x -> a = 3x, b = x^2 -> y = a * b = 3x^3 ; dy/dx = 9x^2
  Tensor x = from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  Tensor a = mul(x, 3.0);
  Tensor b = mul(x, x);  // x used twice by one op, too
  sum(mul(a, b)).backward();
  CHECK(vals(x.grad()) == std::vector<float>{9, 36});
  // the same intermediate used by two consumers
  Tensor w = from_vector(std::vector<float>{0.5f, -1}, {2}).requires_grad_();
  Tensor h = exp(w);
  sum(add(h, mul(h, 2.0))).backward();  // d/dw (3 e^w) = 3 e^w
  CHECK(vals(w.grad())[0] == doctest::Approx(3 * std::exp(0.5)));
  CHECK(vals(w.grad())[1] == doctest::Approx(3 * std::exp(-1.0)));
}

TEST_CASE("autograd: retain_grad keeps the gradient of an intermediate") {
  Tensor x = from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  Tensor h = mul(x, 2.0);
  Tensor k = mul(x, 5.0);  // not retained
  h.retain_grad();
  sum(mul(mul(h, h), k)).backward();  // dL/dh = 2 h k
  REQUIRE(h.grad().defined());
  CHECK(vals(h.grad()) == std::vector<float>{2 * 2 * 5, 2 * 4 * 10});
  CHECK_FALSE(k.grad().defined());
  CHECK_THROWS_WITH_SUBSTR(ones({2}).retain_grad(), "does not require grad");
}

TEST_CASE("autograd: graph_string prints op names and shapes") {
  Tensor x = ones({2, 3}).requires_grad_();
  x.set_name("x");
  Tensor w = ones({3});
  Tensor y = sum(mul(x, w));
  std::string s = graph_string(y);
  INFO(s);
  CHECK(s.find("sum") != std::string::npos);
  CHECK(s.find("mul") != std::string::npos);
  CHECK(s.find("(2, 3)") != std::string::npos);
  CHECK(s.find("x (2, 3) (leaf, requires grad)") != std::string::npos);
  CHECK(s.find("(3,) (no grad)") != std::string::npos);
  CHECK(graph_string(x).find("no graph") != std::string::npos);
  // a node reached twice is printed once, then referred to
  Tensor h = exp(x);
  std::string d = graph_string(add(h, h));
  CHECK(d.find("see above") != std::string::npos);
}

TEST_CASE("autograd: a deep chain backpropagates (and is freed) without stack overflow") {
  // 100000 ops: freeing such a graph recursively overflowed an 8 MB stack before Node::~Node
  // dismantled it iteratively (a running loss summed without detach() builds such a chain)
  const int depth = 100000;
  Tensor x = from_vector(std::vector<float>{1}, {1}).requires_grad_();
  {
    Tensor y = x;
    for (int i = 0; i < depth; ++i) y = add(y, x);  // y = (depth + 1) x
    sum(y).backward();
  }  // dropping y releases the graph
  CHECK(x.grad().item() == depth + 1.0);
  {
    Tensor y = x;
    for (int i = 0; i < depth; ++i) y = mul(y, 1.0);
    CHECK(y.requires_grad());
  }  // freed without backward() having run
  {
    Tensor y = x;
    for (int i = 0; i < 5000; ++i) y = mul(y, 1.0);
    CHECK(graph_string(y).size() < 200u * 5000);  // indentation is capped, not quadratic
  }  // freed without backward() having run
  {
    // a shared intermediate that outlives the chain keeps its own part of the graph alive
    Tensor mid = x;
    for (int i = 0; i < 1000; ++i) mid = mul(mid, 1.0);
    Tensor top = mid;
    for (int i = 0; i < depth; ++i) top = add(top, 0.0);
    top = Tensor();  // free the upper chain
    REQUIRE(mid.grad_fn() != nullptr);
    x.zero_grad();
    sum(mid).backward();
    CHECK(x.grad().item() == 1.0);
  }
}
