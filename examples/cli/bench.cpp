// kdlab bench --model NAME [--batch B --threads N --backend cpu|onednn --iters I --warmup W --json]
// kdlab bench --sgemm [--threads N --json]
//
// The speed of one model on this machine, measured the way bench/pytorch_bench.py measures
// PyTorch (bench/compare_pytorch.sh runs both side by side):
//   training    one step = zero the gradients, forward, cross-entropy, backward, SGD step
//               (momentum 0.9, weight decay 5e-4) on a fixed random batch of B 3x32x32 images
//               with 100 classes; `warmup` steps first, then the median of `iters` timed steps
//   inference   eval mode, no gradient recording, the forward pass alone, timed the same way
//   peak RSS    getrusage's ru_maxrss of the whole process at the end
//   GFLOP/s     2 FLOPs per multiply-accumulate: forward MACs (nn::describe_model) per image for
//               inference, 3x that for a training step (forward + backward-data + backward-weights)
//   % of peak   GFLOP/s over the sgemm peak of this machine (the best of OpenBLAS and, when built
//               in, oneDNN's sgemm on large square matrices; `kdlab bench --sgemm` prints both)
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/backend/backend.h"
#include "engine/generator.h"
#include "engine/kernels/cpu_kernels.h"
#include "engine/version.h"
#include "engine/ops.h"
#include "engine/parallel.h"
#include "examples/cli/cli.h"
#include "nn/models/model.h"
#include "nn/optim.h"

#ifdef KDLAB_HAVE_DNNL
#include <dnnl.h>
#endif

namespace kd::cli {

namespace {

double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return (double)u.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Seconds of each of `iters` calls of step(), after `warmup` untimed calls.
template <typename F>
std::vector<double> time_steps(int64_t warmup, int64_t iters, F step) {
  for (int64_t i = 0; i < warmup; ++i) step();
  std::vector<double> t;
  for (int64_t i = 0; i < iters; ++i) {
    const double t0 = seconds_now();
    step();
    t.push_back(seconds_now() - t0);
  }
  return t;
}

// ------------------------------------------------------------------ sgemm peak

struct SgemmPeak {
  double openblas = 0, onednn = 0;  // GFLOP/s
  double best() const { return std::max(openblas, onednn); }
};

// The best GFLOP/s of C = A @ B on n x n float matrices over a few repetitions and sizes.
SgemmPeak measure_sgemm_peak() {
  SgemmPeak peak;
  for (int64_t n : {1024, 2048, 3072}) {
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.f);
    const double flops = 2.0 * (double)n * n * n;
    const auto openblas = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.f, a.data(), (int)n, b.data(),
                  (int)n, 0.f, c.data(), (int)n);
    };
    for (double t : time_steps(1, 3, openblas)) peak.openblas = std::max(peak.openblas, flops / t / 1e9);
#ifdef KDLAB_HAVE_DNNL
    const auto onednn = [&] {
      dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    };
    for (double t : time_steps(1, 3, onednn)) peak.onednn = std::max(peak.onednn, flops / t / 1e9);
#endif
  }
  return peak;
}

// ------------------------------------------------------------------ one model

struct BenchOptions {
  std::string model, backend;
  int64_t batch = 64, threads = 0, iters = 10, warmup = 3;
  std::string phase = "both";  // train | infer | both
  double peak_gflops = 0;  // 0: measure
  bool json = false, sgemm = false;
};

nlohmann::json bench_model(const BenchOptions& o) {
  nn::ModelConfig mc{100, 3, 32, 0};
  auto model = nn::create_model(o.model, mc);
  const int64_t macs = nn::describe_model(*model, {3, 32, 32}).macs_per_image;
  Generator gen(0);
  Tensor x = randn({o.batch, 3, 32, 32}, gen);  // (B, 3, 32, 32)
  Tensor labels = randint(0, 100, {o.batch}, gen);  // (B)
  nn::SGD opt(model->named_parameters(), /*lr=*/0.01, /*momentum=*/0.9, /*weight_decay=*/5e-4);

  const bool train = o.phase != "infer", infer = o.phase != "train";
  model->train();
  const auto train_times = time_steps(train ? o.warmup : 0, train ? o.iters : 0, [&] {
    opt.zero_grad();
    nn::ModelOutput out = model->forward(x);
    Tensor loss = cross_entropy(out.logits, labels);
    loss.backward();
    opt.step();
  });
  model->eval();
  const auto infer_times = time_steps(infer ? o.warmup : 0, infer ? o.iters : 0, [&] {
    NoGradGuard no_grad;
    nn::ModelOutput out = model->forward(x);
  });
  const double rss = peak_rss_mib();
  const double peak = o.peak_gflops > 0 ? o.peak_gflops : measure_sgemm_peak().best();

  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double train_s = train ? median(train_times) : nan, infer_s = infer ? median(infer_times) : nan;
  const double train_gflops = 3.0 * 2.0 * (double)macs * (double)o.batch / train_s / 1e9;
  const double infer_gflops = 2.0 * (double)macs * (double)o.batch / infer_s / 1e9;
  return {{"framework", "kdlab"},
          {"model", o.model},
          {"backend", backend::backend_name(backend::active_backend())},
          {"isa", kernels::cpu().name},
          {"openblas_core", blas_core()},
          {"batch", o.batch},
          {"threads", num_threads()},
          {"warmup", o.warmup},
          {"iters", o.iters},
          {"macs_per_image", macs},
          {"train_step_ms", train_s * 1e3},
          {"train_images_per_s", (double)o.batch / train_s},
          {"infer_batch_ms", infer_s * 1e3},
          {"infer_images_per_s", (double)o.batch / infer_s},
          {"peak_rss_mib", rss},
          {"train_gflops", train_gflops},
          {"infer_gflops", infer_gflops},
          {"sgemm_peak_gflops", peak},
          {"train_fraction_of_peak", train_gflops / peak},
          {"infer_fraction_of_peak", infer_gflops / peak}};
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Training and inference speed of a model (images/s, GFLOP/s, peak RSS)");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("--model", o->model, "model name (kdlab info --list)");
  cmd->add_option("--batch", o->batch, "batch size")->capture_default_str();
  add_threads_option(cmd, o->threads);
  cmd->add_option("--backend", o->backend, "cpu | onednn (default: KDLAB_BACKEND, else the best one built in)");
  cmd->add_option("--iters", o->iters, "timed iterations (the median is reported)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed iterations first")->capture_default_str();
  cmd->add_option("--phase", o->phase, "train | infer | both (one phase alone, e.g. for a profiler)")
      ->check(CLI::IsMember({"train", "infer", "both"}))
      ->capture_default_str();
  cmd->add_option("--peak-gflops", o->peak_gflops, "the sgemm peak to compare with (default: measure it)");
  cmd->add_flag("--sgemm", o->sgemm, "measure the sgemm peak of this machine and exit");
  cmd->add_flag("--json", o->json, "print one JSON object instead of text");
  cmd->callback([o] {
    if (o->threads > 0) set_num_threads((int)o->threads);
    if (!o->backend.empty()) backend::set_backend(backend::parse_backend(o->backend));
    if (o->sgemm) {
      const SgemmPeak p = measure_sgemm_peak();
      nlohmann::json j{{"threads", num_threads()}, {"openblas_gflops", p.openblas}, {"onednn_gflops", p.onednn},
                       {"sgemm_peak_gflops", p.best()}};
      if (o->json)
        fmt::print("{}\n", j.dump());
      else
        fmt::print("sgemm peak, {} threads: OpenBLAS {:.1f} GFLOP/s, oneDNN {:.1f} GFLOP/s\n", num_threads(),
                   p.openblas, p.onednn);
      return;
    }
    if (const std::string w = blas_core_warning(); !w.empty() && !o->json) fmt::print(stderr, "warning: {}\n", w);
    KD_CHECK(!o->model.empty(), "kdlab bench: give --model NAME (kdlab info --list) or --sgemm");
    KD_CHECK(o->batch >= 1 && o->iters >= 1 && o->warmup >= 0,
             "kdlab bench: --batch and --iters must be >= 1 and --warmup >= 0");
    const nlohmann::json r = bench_model(*o);
    if (o->json) {
      fmt::print("{}\n", r.dump());
      return;
    }
    fmt::print("model {} ({:.1f} M MACs/image), batch {}, {} threads, backend {}, ISA {}, OpenBLAS kernels {}\n",
               o->model, r["macs_per_image"].get<double>() / 1e6, o->batch, r["threads"].get<int>(),
               r["backend"].get<std::string>(), r["isa"].get<std::string>(), r["openblas_core"].get<std::string>());
    if (o->phase != "infer")
      fmt::print("training   {:8.1f} images/s  ({:.1f} ms/step, {:.1f} GFLOP/s, {:.0f}% of sgemm peak)\n",
                 r["train_images_per_s"].get<double>(), r["train_step_ms"].get<double>(),
                 r["train_gflops"].get<double>(), 100 * r["train_fraction_of_peak"].get<double>());
    if (o->phase != "train")
      fmt::print("inference  {:8.1f} images/s  ({:.1f} ms/batch, {:.1f} GFLOP/s, {:.0f}% of sgemm peak)\n",
                 r["infer_images_per_s"].get<double>(), r["infer_batch_ms"].get<double>(),
                 r["infer_gflops"].get<double>(), 100 * r["infer_fraction_of_peak"].get<double>());
    fmt::print("peak RSS   {:8.1f} MiB;  sgemm peak {:.1f} GFLOP/s\n", r["peak_rss_mib"].get<double>(),
               r["sgemm_peak_gflops"].get<double>());
  });
}

}  // namespace kd::cli
